//! End-to-end tests through HTTP, each against its own fresh PostgreSQL database and an
//! in-process fake Stripe. One binary, so the crate compiles once.

mod apps;
mod audit;
mod binary;
mod chaos;
mod connect;
mod crash;
mod dashboard;
mod event_store;
mod helpers;
mod http_basics;
mod private_cluster;
mod projection_races;
mod refunds;
mod rejections;
mod replay;
mod request_ids;
mod schemathesis;
mod secrets;
mod third_party;
mod webhooks;
