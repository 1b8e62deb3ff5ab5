//! `/dashboard`: a read-only page for auditors and support staff, rendered on the server (maud,
//! which escapes every value), with no script at all. It asks for an API token (either role),
//! keeps it in an HttpOnly, SameSite=Strict cookie scoped to `/dashboard`, and shows the apps,
//! recent refunds, a charge's ledger, the audit trail with filters and the chain's verification,
//! all read from the projections.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::FromRequestParts;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Utc};
use ledger_aggregates::charge_ledger::CHARGE_LEDGER;
use ledger_projections::apps::list_apps;
use ledger_projections::audit::{self, AuditFilter};
use ledger_projections::refunds::{find_charge, list_refunds, RefundFilter, RefundRow};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::auth::{Authenticator, Principal};
use super::error::ApiError;
use super::state::AppState;

const COOKIE: &str = "ledger_dashboard";
const RECENT_REFUNDS: i64 = 50;
const AUDIT_PAGE: i64 = 100;

pub fn router(tokens: Arc<Authenticator>) -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/charges/{charge_id}", get(charge))
        .route("/dashboard/audit", get(audit_trail))
        .route("/dashboard/verify", get(verify))
        .layer(Extension(tokens))
}

/// The token in the dashboard's cookie, if it names a principal.
async fn principal(
    headers: &HeaderMap,
    tokens: &Authenticator,
) -> Result<Option<Principal>, ApiError> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, token)| token.to_owned());
    match token {
        Some(token) => Ok(tokens.authenticate(&token).await?),
        None => Ok(None),
    }
}

/// A signed-in viewer: the principal the dashboard's cookie names. Without one, the pages answer
/// the sign-in form (401).
struct Viewer(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let tokens = parts
            .extensions
            .get::<Arc<Authenticator>>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal("the dashboard has no authenticator").into_response()
            })?;
        match principal(&parts.headers, &tokens).await {
            Ok(Some(who)) => Ok(Self(who)),
            Ok(None) => Err(login_page(StatusCode::UNAUTHORIZED, None)),
            Err(error) => Err(error.into_response()),
        }
    }
}

fn page(status: StatusCode, title: &str, who: Option<&Principal>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · connect-ledger" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "connect-ledger" }
                    @if let Some(who) = who {
                        nav {
                            a href="/dashboard" { "Overview" }
                            a href="/dashboard/audit" { "Audit trail" }
                            a href="/dashboard/verify" { "Verify" }
                        }
                        form method="post" action="/dashboard/logout" class="inline" {
                            span.muted { (who.actor) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "Sign in",
        None,
        html! {
            p { "Paste an API token (operator or auditor). The dashboard only reads." }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/dashboard/login" {
                label for="token" { "Token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status) } }
}

fn refunds_table(refunds: &[RefundRow]) -> Markup {
    html! {
        @if refunds.is_empty() {
            p.muted { "No refunds." }
        } @else {
            table #refunds {
                thead { tr {
                    th { "Refund" } th { "App" } th { "Charge" } th { "Purchase" }
                    th.num { "Amount (minor units)" } th { "Status" } th { "Requested by" } th { "Created" }
                } }
                tbody {
                    @for refund in refunds {
                        tr {
                            td { code { (refund.id) } }
                            td { (refund.app) }
                            td { a href={ "/dashboard/charges/" (refund.charge_id) } { code { (refund.charge_id) } } }
                            td { (refund.purchase_id) }
                            td.num { (refund.amount) " " (refund.currency) }
                            td {
                                (status_badge(&refund.status))
                                @if let Some(reason) = &refund.failure_reason { " " span.muted { (reason) } }
                            }
                            td { (refund.requested_by) }
                            td { (when(&refund.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

async fn overview(
    State(state): State<AppState>,
    viewer: Result<Viewer, Response>,
) -> Result<Response, ApiError> {
    let who = match viewer {
        Ok(Viewer(who)) => who,
        // The dashboard's front door: the sign-in form, not an error.
        Err(refused) if refused.status() == StatusCode::UNAUTHORIZED => {
            return Ok(login_page(StatusCode::OK, None))
        }
        Err(other) => return Ok(other),
    };
    let apps = list_apps(&state.pool).await?;
    state.ledger.fresh(CHARGE_LEDGER).await;
    let refunds = list_refunds(
        &state.pool,
        &RefundFilter {
            limit: RECENT_REFUNDS,
            newest_first: true,
            ..RefundFilter::default()
        },
    )
    .await?;
    Ok(page(
        StatusCode::OK,
        "Overview",
        Some(&who),
        html! {
            h2 { "Apps" }
            @if apps.is_empty() {
                p.muted { "No apps registered." }
            } @else {
                table #apps {
                    thead { tr { th { "App" } th { "Name" } th { "Connection" } th { "Stripe account" } th { "Connected" } } }
                    tbody {
                        @for app in &apps {
                            tr {
                                td { a href={ "/dashboard/audit?app=" (app.slug) } { (app.slug) } }
                                td { (app.name) }
                                td { (status_badge(&app.status)) }
                                td { @if let Some(account) = &app.stripe_account_id { code { (account) } } @else { span.muted { "—" } } }
                                td { @if let Some(at) = &app.connected_at { (when(at)) } @else { span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
            h2 { "Recent refunds" }
            (refunds_table(&refunds))
        },
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    Extension(tokens): Extension<Arc<Authenticator>>,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let token = form.token.trim();
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        && tokens.authenticate(token).await?.is_some();
    if !valid {
        return Ok(login_page(
            StatusCode::UNAUTHORIZED,
            Some("That token is not valid."),
        ));
    }
    let secure = if state.public_base.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn logout() -> Response {
    let mut response = Redirect::to("/dashboard").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "ledger_dashboard=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

async fn charge(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Path(charge_id): Path<String>,
) -> Result<Response, ApiError> {
    state.ledger.fresh(CHARGE_LEDGER).await;
    let Some(charge) = find_charge(&state.pool, &charge_id).await? else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            "Charge not found",
            Some(&who),
            html! { p { "The ledger has no refunds for " code { (charge_id) } "." } },
        ));
    };
    let refunds = list_refunds(
        &state.pool,
        &RefundFilter {
            charge_id: Some(charge_id.clone()),
            limit: 1000,
            ..RefundFilter::default()
        },
    )
    .await?;
    Ok(page(
        StatusCode::OK,
        &format!("Charge {charge_id}"),
        Some(&who),
        html! {
            table #charge {
                tbody {
                    tr { th { "App" } td { (charge.app) } }
                    tr { th { "Amount" } td.num { (charge.amount) " " (charge.currency) } }
                    tr { th { "Refunded" } td.num { (charge.refunded) } }
                    tr { th { "Pending at Stripe" } td.num { (charge.pending) } }
                    tr { th { "Still refundable" } td.num { (charge.refundable) } }
                }
            }
            h2 { "Refunds" }
            (refunds_table(&refunds))
            p { a href={ "/dashboard/audit?charge_id=" (charge_id) } { "Audit trail of this charge" } }
        },
    ))
}

#[derive(Deserialize)]
struct AuditQuery {
    app: Option<String>,
    purchase_id: Option<String>,
    charge_id: Option<String>,
    refund_id: Option<String>,
    source: Option<String>,
    after: Option<i64>,
}

fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

async fn audit_trail(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Ok(Query(query)) = query else {
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "Audit trail",
            Some(&who),
            html! { p.error { "Those filters cannot be read." } },
        ));
    };
    let source = given(query.source);
    if source
        .as_deref()
        .is_some_and(|s| ledger_aggregates::Source::parse(s).is_none())
    {
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Audit trail",
            Some(&who),
            html! { p.error { "source is api, stripe_webhook or system" } },
        ));
    }
    let filter = AuditFilter {
        app: given(query.app),
        purchase_id: given(query.purchase_id),
        charge_id: given(query.charge_id),
        refund_id: given(query.refund_id),
        source,
        after: query.after,
        limit: AUDIT_PAGE,
        ..AuditFilter::default()
    };
    let (entries, next) = audit::query(&state.pool, &filter).await?;
    let field = |name: &'static str, label: &'static str, value: &Option<String>| {
        html! {
            label { (label) " " input name=(name) value=(value.as_deref().unwrap_or("")); }
        }
    };
    let next_link = next.map(|after| {
        let mut params: Vec<(&str, String)> = vec![("after", after.to_string())];
        for (name, value) in [
            ("app", &filter.app),
            ("purchase_id", &filter.purchase_id),
            ("charge_id", &filter.charge_id),
            ("refund_id", &filter.refund_id),
            ("source", &filter.source),
        ] {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        format!(
            "/dashboard/audit?{}",
            serde_urlencoded::to_string(&params).unwrap_or_default()
        )
    });
    Ok(page(
        StatusCode::OK,
        "Audit trail",
        Some(&who),
        html! {
            form method="get" action="/dashboard/audit" class="filters" {
                (field("app", "App", &filter.app))
                (field("purchase_id", "Purchase", &filter.purchase_id))
                (field("charge_id", "Charge", &filter.charge_id))
                (field("refund_id", "Refund", &filter.refund_id))
                label { "Source " select name="source" {
                    option value="" { "any" }
                    @for s in ["api", "stripe_webhook", "system"] {
                        option value=(s) selected[filter.source.as_deref() == Some(s)] { (s) }
                    }
                } }
                button type="submit" { "Filter" }
            }
            @if entries.is_empty() {
                p.muted { "No entries." }
            } @else {
                table #audit {
                    thead { tr {
                        th.num { "#" } th { "Recorded" } th { "Event" } th { "Aggregate" } th { "Source" }
                        th { "Actor" } th { "App" } th { "Charge" } th { "Refund" } th { "Request / Stripe event" }
                    } }
                    tbody {
                        @for entry in &entries {
                            tr {
                                td.num { (entry.position) }
                                td { (when(&entry.recorded_at)) }
                                td { (entry.event_type) }
                                td { code { (entry.aggregate_id) } " #" (entry.sequence) }
                                td { (entry.source) }
                                td { (entry.actor) }
                                td { (entry.app.as_deref().unwrap_or("")) }
                                td { @if let Some(c) = &entry.charge_id { a href={ "/dashboard/charges/" (c) } { code { (c) } } } }
                                td { @if let Some(r) = &entry.refund_id { code { (r) } } }
                                td { code { (entry.stripe_event_id.as_deref().or(entry.correlation_id.as_deref()).unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next_link { p { a href=(next) { "Next page →" } } }
        },
    ))
}

async fn verify(State(state): State<AppState>, Viewer(who): Viewer) -> Result<Response, ApiError> {
    let verification = audit::verify(&state.pool).await?;
    Ok(page(
        StatusCode::OK,
        "Audit chain verification",
        Some(&who),
        html! {
            @if verification.ok {
                p #verify-result .ok { "Intact: " (verification.checked) " entries checked, every hash links to the one before." }
            } @else {
                p #verify-result .error role="alert" {
                    "Broken at entry " (verification.first_bad_position.unwrap_or_default())
                    " (" (verification.checked) " entries checked)."
                }
            }
            @if let Some(head) = &verification.head {
                p { "Head hash (keep it elsewhere to detect a rewritten chain): " code { (head) } }
            }
        },
    ))
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{display:flex;gap:1.5rem;align-items:center;padding:.6rem 1.2rem;background:#1b1f24;color:#fff}
header a{color:#cde;margin-right:1rem}header form{margin-left:auto}
main{padding:1rem 1.2rem}h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;background:#fff;width:100%}th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left}
td.num,th.num{text-align:right}code{font-size:.92em}
.badge{padding:.05rem .45rem;border-radius:.6rem;background:#e3e6ea}
.succeeded,.connected{background:#d4f4dd}.failed,.canceled,.disconnected{background:#fbdcdc}.requested,.pending{background:#fdf1c7}
.muted{color:#6a737d}.error{color:#a01818}.ok{color:#176b2c}
.filters{display:flex;flex-wrap:wrap;gap:.6rem;margin-bottom:1rem}.inline{display:inline}
form label{margin-right:.4rem}input,select,button{font:inherit;padding:.2rem .4rem}
";
