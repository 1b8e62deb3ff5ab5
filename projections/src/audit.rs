//! The audit log: every event with who, what, when and from where, in the ledger's global
//! order, sealed in a hash chain.
//!
//! Entry `n` stores `hash_n = SHA-256(hash_{n-1} ‖ content of its event row)`. `verify` recomputes
//! the chain from the `events` table: an event row changed, deleted, swapped with another or
//! slipped in behind the chain breaks it at the first affected position. To also catch someone who
//! rewrites the chain itself, keep the `head` hash that `verify` reports somewhere else.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_aggregates::app_connection::APP_CONNECTION;
use ledger_aggregates::charge_ledger::CHARGE_LEDGER;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, QueryBuilder};

use crate::runner::{moved_checkpoint_query, ONE_STATEMENT_RESULT};
use crate::{Checkpoint, Projection, ProjectionError, StoredEvent};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct AuditProjection {
    name: String,
    table: String,
    /// Charges' apps and refunds' purchases learned from earlier batches. These never change,
    /// so they are kept without regard to checkpoints (unlike decision 28's rows): a batch
    /// reads from `events` only the links it holds neither in its own events nor here.
    learned: Mutex<KnownLinks>,
    /// The chain's last entry as this process's committed batches left it (decision 39).
    tip: Mutex<KeptTip>,
}

/// The last entry's position and hash, current while the projection's checkpoint stands where
/// the batch that wrote it left it. The chain up to a checkpoint is a function of the events
/// before it, so the tip is known without reading the table until another runner moves the
/// checkpoint; the primary key on `position` refuses a stale one in any case.
#[derive(Default)]
struct KeptTip {
    /// The checkpoint the tip is current at, and the tip (`None`: none kept).
    at: Option<(Checkpoint, Tip)>,
    /// The tip a batch wrote, and the checkpoints it moves between; kept once the runner
    /// reports that batch committed.
    pending: Option<(Checkpoint, Checkpoint, Tip)>,
}

/// An entry's position and hash: where the next entry links.
type Tip = (i64, String);

/// How many links [`AuditProjection::learned`] holds before it starts again from empty (a link
/// is two short strings).
const LEARNED_LINKS: usize = 16_384;

impl AuditProjection {
    pub const NAME: &'static str = "audit";

    pub fn live() -> Self {
        Self::into_table(Self::NAME, "audit_entries")
    }

    pub fn into_table(name: &str, table: &str) -> Self {
        Self {
            name: name.to_owned(),
            table: table.to_owned(),
            learned: Mutex::new(KnownLinks::default()),
            tip: Mutex::new(KeptTip::default()),
        }
    }
}

/// The link of the chain for one event row: SHA-256 over the previous hash and the row's fields,
/// each after a newline (JSON in serde_json's compact form, written straight into the hasher).
pub fn entry_hash(previous: &str, event: &StoredEvent) -> String {
    struct Feed<'a>(&'a mut Sha256);
    impl std::io::Write for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    let mut field = |text: &str| {
        hasher.update(b"\n");
        hasher.update(text.as_bytes());
    };
    field(&event.global_position.to_string());
    field(&event.aggregate_type);
    field(&event.aggregate_id);
    field(&event.sequence.to_string());
    field(&event.event_type);
    field(&event.event_version);
    field(&event.recorded_at.timestamp_micros().to_string());
    for json in [&event.payload, &event.metadata] {
        hasher.update(b"\n");
        // Writing into a hasher cannot fail.
        let _ = serde_json::to_writer(Feed(&mut hasher), json);
    }
    hex::encode(hasher.finalize())
}

/// The event's own fields (the payload is `{"<EventType>": {…}}`).
fn inner(payload: &Value) -> Option<&serde_json::Map<String, Value>> {
    payload.as_object()?.values().next()?.as_object()
}

fn text(map: Option<&serde_json::Map<String, Value>>, key: &str) -> Option<String> {
    map?.get(key)?.as_str().map(str::to_owned)
}

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn aggregate_types(&self) -> &[&'static str] {
        &[APP_CONNECTION, CHARGE_LEDGER]
    }

    fn read_your_writes(&self) -> bool {
        false
    }

    fn tables(&self) -> Vec<String> {
        vec![self.table.clone()]
    }

    fn aside(&self) -> Arc<dyn Projection> {
        Arc::new(Self::into_table(
            &format!("{}{}", self.name, crate::rebuild::ASIDE_SUFFIX),
            &format!("{}{}", crate::rebuild::ASIDE_PREFIX, self.table),
        ))
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let tip = self.read_tip(conn).await?;
        let (rows, _) = self.entries(conn, events, tip).await?;
        self.insert(conn, rows, None).await?;
        Ok(())
    }

    fn one_statement_batches(&self) -> bool {
        true
    }

    /// The batch's entries and the checkpoint's move in one statement, outside any transaction
    /// (decision 39): the transaction holds its id for one statement only, and every other
    /// projection's horizon waits for it that long only.
    async fn apply_moving_checkpoint(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
        from: Checkpoint,
        to: Checkpoint,
    ) -> Result<bool, ProjectionError> {
        let kept = {
            let kept = self.tip.lock().unwrap_or_else(|p| p.into_inner());
            kept.at
                .clone()
                .filter(|(at, _)| *at == from)
                .map(|(_, tip)| tip)
        };
        let tip = match kept {
            Some(tip) => tip,
            None => self.read_tip(conn).await?,
        };
        let written = async {
            let (rows, last) = self.entries(conn, events, tip).await?;
            let moved = self.insert(conn, rows, Some((from, to))).await?;
            Ok::<_, sqlx::Error>(moved.then_some(last))
        }
        .await;
        let mut kept = self.tip.lock().unwrap_or_else(|p| p.into_inner());
        match written {
            Ok(Some(last)) => {
                kept.pending = Some((from, to, last));
                Ok(true)
            }
            // Whatever went wrong, the next batch reads the tip from the table: a kept tip that
            // no longer matches it (an entry written behind this process's back) fails the
            // primary key every time it is used.
            Ok(None) => {
                *kept = KeptTip::default();
                Ok(false)
            }
            Err(error) => {
                *kept = KeptTip::default();
                Err(error.into())
            }
        }
    }

    fn committed(&self, from: Checkpoint, to: Checkpoint, applied: u64) {
        let mut kept = self.tip.lock().unwrap_or_else(|p| p.into_inner());
        let pending = kept.pending.take();
        let still = kept.at.as_ref().is_some_and(|(at, _)| *at == from);
        match pending {
            Some((start, end, tip)) if applied > 0 && start == from && end == to => {
                kept.at = Some((to, tip));
            }
            // A batch that moved the checkpoint past other types' events only.
            _ if applied == 0 && still => {
                if let Some((at, _)) = kept.at.as_mut() {
                    *at = to;
                }
            }
            _ => kept.at = None,
        }
    }
}

impl AuditProjection {
    /// The chain's last entry as the table holds it.
    async fn read_tip(&self, conn: &mut PgConnection) -> Result<Tip, sqlx::Error> {
        let table = &self.table;
        Ok(sqlx::query_as(&format!(
            "SELECT position, hash FROM {table} ORDER BY position DESC LIMIT 1"
        ))
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or((0, GENESIS.to_owned())))
    }

    /// The entries of `events`, chained on from `tip`, and the tip they end at.
    async fn entries<'e>(
        &self,
        conn: &mut PgConnection,
        events: &[&'e StoredEvent],
        (mut position, mut previous): Tip,
    ) -> Result<(EntryColumns<'e>, Tip), sqlx::Error> {
        let mut known = self.known_links(conn, events).await?;
        let mut rows = EntryColumns::with_capacity(events.len());
        for event in events {
            let fields = inner(&event.payload);
            let meta = event.metadata.as_object();
            let meta_text = |key: &str| {
                meta.and_then(|m| m.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let refund_id = text(fields, "refund_id");
            let mut purchase_id = text(fields, "purchase_id");
            let mut charge_id = None;
            let mut app: Option<String> = Some(event.aggregate_id.clone());
            if event.aggregate_type != APP_CONNECTION {
                charge_id = Some(event.aggregate_id.clone());
                app = charge_app(fields);
                match &app {
                    Some(app) => {
                        known
                            .app_of_charge
                            .entry(event.aggregate_id.clone())
                            .or_insert_with(|| app.clone());
                    }
                    None => app = known.app_of_charge.get(&event.aggregate_id).cloned(),
                }
                if let Some(refund) = &refund_id {
                    match &purchase_id {
                        Some(purchase) => {
                            known
                                .purchase_of_refund
                                .entry(refund.clone())
                                .or_insert_with(|| purchase.clone());
                        }
                        None => purchase_id = known.purchase_of_refund.get(refund).cloned(),
                    }
                }
            }
            position += 1;
            previous = entry_hash(&previous, event);
            rows.position.push(position);
            rows.global_position.push(event.global_position);
            rows.recorded_at.push(event.recorded_at);
            rows.aggregate_type.push(event.aggregate_type.as_str());
            rows.aggregate_id.push(event.aggregate_id.as_str());
            rows.sequence.push(event.sequence);
            rows.event_type.push(event.event_type.as_str());
            rows.source
                .push(meta_text("source").unwrap_or_else(|| "system".to_owned()));
            rows.actor.push(meta_text("actor").unwrap_or_default());
            rows.correlation_id.push(meta_text("correlation_id"));
            rows.stripe_event_id.push(meta_text("stripe_event_id"));
            rows.app.push(app);
            rows.purchase_id.push(purchase_id);
            rows.charge_id.push(charge_id);
            rows.refund_id.push(refund_id);
            rows.hash.push(previous.clone());
        }
        self.learn(known);
        Ok((rows, (position, previous)))
    }

    /// Writes `rows`. With `moving`, the same statement moves the projection's checkpoint from
    /// its first to its second checkpoint, writes only if it stood at the first (the
    /// compare-and-set of `runner::move_checkpoint`), and makes the commit asynchronous as the
    /// runner's transactions are (docs/decisions/0023); returns whether it wrote.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        rows: EntryColumns<'_>,
        moving: Option<(Checkpoint, Checkpoint)>,
    ) -> Result<bool, sqlx::Error> {
        let table = &self.table;
        let (moved, guard) = match moving {
            Some(_) => (
                format!("WITH {}, written AS (", moved_checkpoint_query(17)),
                format!(" WHERE EXISTS (SELECT 1 FROM moved) RETURNING 1) {ONE_STATEMENT_RESULT}"),
            ),
            None => (String::new(), String::new()),
        };
        let sql = format!(
            "{moved}INSERT INTO {table} (position, global_position, recorded_at, aggregate_type, aggregate_id, sequence, \
               event_type, source, actor, correlation_id, stripe_event_id, app, purchase_id, charge_id, refund_id, hash) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[], $6::int8[], \
               $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
               $15::text[], $16::text[]){guard}"
        );
        let query = sqlx::query(&sql)
            .bind(rows.position)
            .bind(rows.global_position)
            .bind(rows.recorded_at)
            .bind(rows.aggregate_type)
            .bind(rows.aggregate_id)
            .bind(rows.sequence)
            .bind(rows.event_type)
            .bind(rows.source)
            .bind(rows.actor)
            .bind(rows.correlation_id)
            .bind(rows.stripe_event_id)
            .bind(rows.app)
            .bind(rows.purchase_id)
            .bind(rows.charge_id)
            .bind(rows.refund_id)
            .bind(rows.hash);
        let Some((from, to)) = moving else {
            query.execute(&mut *conn).await?;
            return Ok(true);
        };
        let row = query
            .bind(&self.name)
            .bind(from.transaction_id.to_string())
            .bind(from.position)
            .bind(to.transaction_id.to_string())
            .bind(to.position)
            .fetch_one(&mut *conn)
            .await?;
        sqlx::Row::try_get(&row, 0)
    }
}

/// The app of a charge's events, when the event names it (`ChargeObserved`).
fn charge_app(fields: Option<&serde_json::Map<String, Value>>) -> Option<String> {
    fields?
        .get("charge")?
        .get("app")?
        .as_str()
        .map(str::to_owned)
}

/// Moves into `known` the links of `wanted` that `learned` holds; `wanted` keeps the others.
fn take_learned(
    wanted: &mut HashSet<&str>,
    learned: &HashMap<String, String>,
    known: &mut HashMap<String, String>,
) {
    wanted.retain(|id| match learned.get(*id) {
        Some(link) => {
            known.insert((*id).to_owned(), link.clone());
            false
        }
        None => true,
    });
}

impl AuditProjection {
    /// Keeps the links a batch used or found, for the batches after it.
    fn learn(&self, links: KnownLinks) {
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let size = learned.app_of_charge.len() + learned.purchase_of_refund.len();
        if size + links.app_of_charge.len() + links.purchase_of_refund.len() > LEARNED_LINKS {
            *learned = KnownLinks::default();
        }
        learned.app_of_charge.extend(links.app_of_charge);
        learned.purchase_of_refund.extend(links.purchase_of_refund);
    }
}

/// What earlier entries say about the charges and refunds of a batch, for events that do not
/// carry their app or purchase themselves.
#[derive(Default)]
struct KnownLinks {
    app_of_charge: HashMap<String, String>,
    purchase_of_refund: HashMap<String, String>,
}

impl AuditProjection {
    /// Reads, in one query, the links the batch finds neither in its own events nor among those
    /// learned from earlier batches (decision 33). They come from
    /// the charges' earlier events in `events` (through its primary key), not from earlier audit
    /// entries: the audit table then needs no index of its own while it is written, which lets a
    /// rebuild create its indexes after the replay. A charge's app never changes (the aggregate
    /// refuses another), and a refund's purchase is named by its `RefundRequested`, so the first
    /// event naming either is the one earlier entries took it from.
    async fn known_links(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<KnownLinks, sqlx::Error> {
        let mut seen_charges = HashSet::new();
        let mut seen_refunds = HashSet::new();
        let mut charges = HashSet::new();
        let mut refunds = HashSet::new();
        let mut refund_charges = HashMap::new();
        for event in events.iter().filter(|e| e.aggregate_type != APP_CONNECTION) {
            let fields = inner(&event.payload);
            if charge_app(fields).is_some() {
                seen_charges.insert(event.aggregate_id.as_str());
            } else if !seen_charges.contains(event.aggregate_id.as_str()) {
                charges.insert(event.aggregate_id.as_str());
            }
            if let Some(refund) = fields
                .and_then(|f| f.get("refund_id"))
                .and_then(Value::as_str)
            {
                if text(fields, "purchase_id").is_some() {
                    seen_refunds.insert(refund);
                } else if !seen_refunds.contains(refund) {
                    refunds.insert(refund);
                    refund_charges.insert(refund, event.aggregate_id.as_str());
                }
            }
        }
        let mut known = KnownLinks::default();
        {
            let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
            take_learned(
                &mut charges,
                &learned.app_of_charge,
                &mut known.app_of_charge,
            );
            take_learned(
                &mut refunds,
                &learned.purchase_of_refund,
                &mut known.purchase_of_refund,
            );
        }
        charges.extend(refunds.iter().map(|refund| refund_charges[refund]));
        if charges.is_empty() {
            return Ok(known);
        }
        let charges: Vec<&str> = charges.into_iter().collect();
        let found: Vec<LinkRow> = sqlx::query_as(
            "SELECT aggregate_id AS charge, app, refund_id AS refund, purchase_id AS purchase FROM ( \
               SELECT aggregate_id, sequence, payload -> event_type -> 'charge' ->> 'app' AS app, \
                 payload -> event_type ->> 'refund_id' AS refund_id, \
                 payload -> event_type ->> 'purchase_id' AS purchase_id \
               FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2)) linked \
             WHERE app IS NOT NULL OR purchase_id IS NOT NULL ORDER BY aggregate_id, sequence",
        )
        .bind(CHARGE_LEDGER)
        .bind(&charges)
        .fetch_all(&mut *conn)
        .await?;
        for LinkRow {
            charge,
            app,
            refund,
            purchase,
        } in found
        {
            if let Some(app) = app {
                known.app_of_charge.entry(charge).or_insert(app);
            }
            if let (Some(refund), Some(purchase)) = (refund, purchase) {
                if refunds.contains(refund.as_str()) {
                    known.purchase_of_refund.entry(refund).or_insert(purchase);
                }
            }
        }
        Ok(known)
    }
}

/// An event of a looked-up charge that names its app or a refund's purchase.
#[derive(sqlx::FromRow)]
struct LinkRow {
    charge: String,
    app: Option<String>,
    refund: Option<String>,
    purchase: Option<String>,
}

/// The audit rows of a batch, column by column, for one `INSERT … SELECT FROM UNNEST`.
#[derive(Default)]
struct EntryColumns<'a> {
    position: Vec<i64>,
    global_position: Vec<i64>,
    recorded_at: Vec<DateTime<Utc>>,
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    sequence: Vec<i64>,
    event_type: Vec<&'a str>,
    source: Vec<String>,
    actor: Vec<String>,
    correlation_id: Vec<Option<String>>,
    stripe_event_id: Vec<Option<String>>,
    app: Vec<Option<String>>,
    purchase_id: Vec<Option<String>>,
    charge_id: Vec<Option<String>>,
    refund_id: Vec<Option<String>>,
    hash: Vec<String>,
}

impl EntryColumns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            position: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            ..Self::default()
        }
    }
}

/// One audit entry as auditors read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub source: String,
    pub actor: String,
    pub correlation_id: Option<String>,
    pub stripe_event_id: Option<String>,
    pub app: Option<String>,
    pub purchase_id: Option<String>,
    pub charge_id: Option<String>,
    pub refund_id: Option<String>,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub app: Option<String>,
    pub purchase_id: Option<String>,
    pub charge_id: Option<String>,
    pub refund_id: Option<String>,
    pub source: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: Option<i64>,
    pub limit: i64,
}

/// Entries oldest first, and the cursor for the next page.
pub async fn query(
    pool: &PgPool,
    filter: &AuditFilter,
) -> Result<(Vec<AuditEntry>, Option<i64>), sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT a.position, a.recorded_at, a.aggregate_type, a.aggregate_id, a.sequence, a.event_type, a.source, \
           a.actor, a.correlation_id, a.stripe_event_id, a.app, a.purchase_id, a.charge_id, a.refund_id, \
           COALESCE((SELECT value FROM json_each(e.payload) LIMIT 1), e.payload::json)::jsonb AS data \
         FROM audit_entries a LEFT JOIN events e ON e.global_position = a.global_position WHERE true",
    );
    for (column, value) in [
        ("a.app", &filter.app),
        ("a.purchase_id", &filter.purchase_id),
        ("a.charge_id", &filter.charge_id),
        ("a.refund_id", &filter.refund_id),
        ("a.source", &filter.source),
    ] {
        if let Some(value) = value {
            q.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
    if let Some(since) = filter.since {
        q.push(" AND a.recorded_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND a.recorded_at < ").push_bind(until);
    }
    if let Some(after) = filter.after {
        q.push(" AND a.position > ").push_bind(after);
    }
    q.push(" ORDER BY a.position LIMIT ")
        .push_bind(filter.limit + 1);
    let mut entries: Vec<AuditEntry> = q.build_query_as().fetch_all(pool).await?;
    let next = if entries.len() as i64 > filter.limit {
        entries.truncate(filter.limit as usize);
        entries.last().map(|e| e.position)
    } else {
        None
    };
    Ok((entries, next))
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    pub checked: i64,
    pub first_bad_position: Option<i64>,
    /// The hash of the last entry: keep it elsewhere to detect a rewritten chain.
    pub head: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ChainRow {
    position: i64,
    hash: String,
    global_position: Option<i64>,
    transaction_id: Option<i64>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    sequence: Option<i64>,
    event_type: Option<String>,
    event_version: Option<String>,
    payload: Option<Value>,
    metadata: Option<Value>,
    recorded_at: Option<DateTime<Utc>>,
}

impl ChainRow {
    fn event(self) -> Option<StoredEvent> {
        Some(StoredEvent {
            global_position: self.global_position?,
            transaction_id: self.transaction_id?,
            aggregate_type: self.aggregate_type?,
            aggregate_id: self.aggregate_id?,
            sequence: self.sequence?,
            event_type: self.event_type?,
            event_version: self.event_version?,
            payload: self.payload?,
            metadata: self.metadata?,
            recorded_at: self.recorded_at?,
        })
    }
}

/// Recomputes the chain over every sealed entry against the current `events` rows.
pub async fn verify(pool: &PgPool) -> Result<Verification, sqlx::Error> {
    const PAGE: i64 = 5000;
    let mut previous = GENESIS.to_owned();
    let mut expected = 1;
    let mut checked = 0;
    loop {
        let rows: Vec<ChainRow> = sqlx::query_as(&format!(
            "SELECT a.position, a.hash, e.global_position, e.transaction_id::text::bigint AS transaction_id, \
               e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata, e.recorded_at \
             FROM audit_entries a LEFT JOIN events e ON e.global_position = a.global_position \
             WHERE a.position >= $1 ORDER BY a.position LIMIT {PAGE}"
        ))
        .bind(expected)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let position = row.position;
            let stored = row.hash.clone();
            let intact = position == expected
                && row
                    .event()
                    .is_some_and(|event| entry_hash(&previous, &event) == stored);
            if !intact {
                return Ok(Verification {
                    ok: false,
                    checked,
                    first_bad_position: Some(expected.min(position)),
                    head: None,
                });
            }
            previous = stored;
            expected += 1;
            checked += 1;
        }
    }
    // An event row slipped in behind the chain (below the audit checkpoint, never sealed).
    let slipped: Option<i64> = sqlx::query_scalar(
        "SELECT min(a.position) FROM audit_entries a JOIN events e ON e.global_position = a.global_position \
         WHERE (e.transaction_id, e.global_position) > ( \
           SELECT x.transaction_id, x.global_position FROM events x \
           WHERE NOT EXISTS (SELECT 1 FROM audit_entries y WHERE y.global_position = x.global_position) \
             AND (x.transaction_id, x.global_position) <= \
               (SELECT c.last_transaction_id, c.last_position FROM projection_checkpoints c WHERE c.name = 'audit') \
             AND x.aggregate_type IN ('AppConnection', 'ChargeLedger') \
           ORDER BY x.transaction_id, x.global_position LIMIT 1)",
    )
    .fetch_one(pool)
    .await?;
    if let Some(position) = slipped {
        return Ok(Verification {
            ok: false,
            checked,
            first_bad_position: Some(position),
            head: None,
        });
    }
    Ok(Verification {
        ok: true,
        checked,
        first_bad_position: None,
        head: (checked > 0).then_some(previous),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain's formula, spelled out: changing it would break every stored chain.
    #[test]
    fn entry_hash_is_the_documented_formula() {
        let event = StoredEvent {
            global_position: 42,
            transaction_id: 7,
            aggregate_type: "ChargeLedger".into(),
            aggregate_id: "ch_1".into(),
            sequence: 3,
            event_type: "RefundSubmitted".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"RefundSubmitted": {"refund_id": "rf_1", "attempt": 1}}),
            metadata: serde_json::json!({"actor": "a", "source": "api"}),
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
        };
        let text = format!(
            "{GENESIS}\n42\nChargeLedger\nch_1\n3\nRefundSubmitted\n1.0\n1700000000123456\n{}\n{}",
            r#"{"RefundSubmitted":{"attempt":1,"refund_id":"rf_1"}}"#,
            r#"{"actor":"a","source":"api"}"#
        );
        assert_eq!(
            entry_hash(GENESIS, &event),
            hex::encode(Sha256::digest(text.as_bytes()))
        );
    }
}
