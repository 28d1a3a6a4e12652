//! The decision dashboard: a page at `/` (its assets built into the binary), fed live by
//! server-sent events from `GET /v1/dashboard/stream`, with a page per route whose charts
//! are SVG drawn here with plotters.
//!
//! A sampler reads every route once per [`DashboardConfig::sample_every`] and keeps the
//! last [`DashboardConfig::history`] of it, so that a page opened now shows the minutes
//! before. Each update is serialized once and its bytes shared by every open page; the
//! full update a page opens with is built at most once per sample and shared too: a
//! thousand tabs cost one serialization, and nothing is built while no page is open.
//!
//! The feed is bounded: at most [`DashboardConfig::max_clients`] pages at once (`503`
//! past it), and a page that falls behind is dropped, never buffered (see `feed`). Its
//! data may need a token ([`DashboardAuth`]).

mod access;
mod chart;
mod feed;

pub use access::DashboardAuth;
use access::Viewer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atrion::{Mode, Reason, Timestamp};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::views::{NodeView, RouteView, route_view};
use crate::problem::{AdminProblems, Problem, ProblemKind};
use crate::{PolicyHandle, Shared, SidecarAtrion};

/// How the dashboard samples and what it keeps.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// How often every route is sampled and the open pages updated.
    pub sample_every: Duration,
    /// How much of the past the route charts show.
    pub history: Duration,
    /// How many samples a route's sparkline shows.
    pub sparkline: usize,
    /// The most routes the dashboard follows (history and feed). Routes past it are
    /// counted, not shown; a route that goes away frees its place for the next. Memory is
    /// bounded by about `max_routes × history / sample_every × 48` bytes (29 MB at the
    /// defaults with every place taken).
    pub max_routes: usize,
    /// The most live feeds (`GET /v1/dashboard/stream`) open at once; past it a page gets
    /// `503` with `Retry-After`. Default 64. Each costs little (the updates are shared),
    /// but each is a connection held open.
    pub max_clients: usize,
    /// Who may read the dashboard's data: anyone by default ([`DashboardAuth::Open`]).
    pub auth: DashboardAuth,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            sample_every: Duration::from_secs(1),
            history: Duration::from_secs(300),
            sparkline: 120,
            max_routes: 2_000,
            max_clients: 64,
            auth: DashboardAuth::Open,
        }
    }
}

impl DashboardConfig {
    fn samples(&self) -> usize {
        let every = self.sample_every.as_secs_f64().max(0.01);
        ((self.history.as_secs_f64() / every).ceil() as usize).clamp(2, 100_000)
    }
}

/// One sample of a route.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// The engine's clock, in ms.
    at_ms: u64,
    mode: Mode,
    resistance: f32,
    scar: f32,
    break_point: f32,
    momentum: f32,
    mean: f32,
    sd: f32,
    /// Decisions since the sample before.
    admitted: u32,
    shed: u32,
}

/// How many samples the shed ratio is measured over.
const SHED_WINDOW: usize = 5;

#[derive(Default)]
struct History {
    samples: VecDeque<Sample>,
    /// Cumulative counts at each of the last samples (the window's start is the front).
    counts: VecDeque<(u64, u64, [u64; Reason::ALL.len()])>,
}

/// The dashboard's state: the sampler's history and the channel to the open pages.
pub(crate) struct Dashboard {
    atrion: Arc<SidecarAtrion>,
    policy: Option<PolicyHandle>,
    config: DashboardConfig,
    history: Mutex<HashMap<Box<str>, History>>,
    /// Each update, serialized once, to every open feed.
    ticks: broadcast::Sender<Bytes>,
    closed: watch::Sender<bool>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Routes the node tracked at the last sample.
    total: AtomicUsize,
    /// Each route's row as the last delta sent it.
    sent: Mutex<HashMap<String, String>>,
    /// Samples taken: which sample the cached full update shows.
    samples: AtomicU64,
    /// The full update of a sample, built by the first page that opens after it and shared
    /// by the next ones (an async lock: pages opening together wait for one build). Let go
    /// when no page is open.
    full: tokio::sync::Mutex<Option<(u64, Bytes)>>,
    /// Feeds open now.
    open: Arc<AtomicUsize>,
}

/// A route's row in the dashboard's table.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteRow {
    /// The route.
    route: String,
    /// `bootstrap`, `operational`, `open`, `half_open`.
    #[schema(value_type = String, example = "operational")]
    mode: Mode,
    /// When it entered this mode, on the engine's clock (ms; compare with the update's
    /// `clock_ms`), when a transition was seen.
    mode_since_ms: Option<u64>,
    /// An operator's or a policy's hold: `released`, `open`, `closed`, `shadow`.
    #[schema(value_type = String, example = "released")]
    held: atrion::Hold,
    /// The pattern of the policy the route runs.
    policy: Option<String>,
    /// Resistance (ohms).
    resistance: f64,
    /// The tuner's break point (ohms).
    break_point: f64,
    /// Scar tissue (ohms).
    scar: f64,
    /// Momentum.
    momentum: f64,
    /// Decisions per second, over the last sample.
    rate: f64,
    /// The share of decisions shed over the last samples.
    shed_ratio: f64,
    /// That share by reason (only reasons that shed).
    shed_by: BTreeMap<&'static str, f64>,
    /// Resistance over the last samples, oldest first (in the first message only: the page
    /// appends each update's resistance).
    #[serde(skip_serializing_if = "Option::is_none")]
    spark: Option<Vec<f32>>,
}

/// A node in the dashboard.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeRow {
    #[serde(flatten)]
    node: NodeView,
    /// The policy version it runs, as last heard.
    policy_version: Option<u64>,
}

/// The policy layer at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicySummary {
    /// The desired version, as this node last read it.
    desired: u64,
    /// Divergence alerts in force.
    #[schema(value_type = Vec<Object>)]
    alerts: Vec<atrion_policy::Alert>,
}

/// One message of `GET /v1/dashboard/stream`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Update {
    /// The node answering.
    node: String,
    /// Wall time of the sample (ms since the Unix epoch).
    at_ms: u64,
    /// How often updates come (ms).
    every_ms: u64,
    /// The engine's clock at the sample (ms): the reference of `mode_since_ms`.
    clock_ms: u64,
    /// The store is away: decisions go on, on local state.
    degraded: bool,
    /// Whether `routes` holds every route the dashboard follows (the first message, and
    /// after a page fell behind), or only those that changed since the update before (a
    /// route left out is as it was; its sparkline takes its resistance again).
    full: bool,
    /// The routes, by id: every one or the changed ones (see `full`).
    #[schema(value_type = Vec<RouteRow>)]
    routes: Vec<Box<RawValue>>,
    /// Routes gone since the update before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
    /// How many routes the node tracks: more than `routes` holds when past the dashboard's
    /// limit.
    routes_total: usize,
    /// The cluster.
    nodes: Vec<NodeRow>,
    /// The policy layer, when the server runs one.
    policy: Option<PolicySummary>,
}

impl Dashboard {
    pub(crate) fn new(atrion: Arc<SidecarAtrion>, policy: Option<PolicyHandle>, config: DashboardConfig) -> Arc<Self> {
        let (ticks, _) = broadcast::channel(feed::BEHIND);
        let dashboard = Arc::new(Dashboard {
            atrion,
            policy,
            config,
            history: Mutex::new(HashMap::new()),
            ticks,
            closed: watch::Sender::new(false),
            sampler: Mutex::new(None),
            total: AtomicUsize::new(0),
            sent: Mutex::new(HashMap::new()),
            samples: AtomicU64::new(0),
            full: tokio::sync::Mutex::new(None),
            open: Arc::new(AtomicUsize::new(0)),
        });
        // Outside a runtime (a router built in a plain test), the pages get no history. The
        // task holds the dashboard weakly: it ends when the router is dropped, or on close.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let task = rt.spawn(sampler(Arc::downgrade(&dashboard), dashboard.config.sample_every));
            *dashboard.sampler.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        }
        dashboard
    }

    /// Ends the open feeds (a graceful shutdown waits for every open connection) and the
    /// sampler, and waits for the sampler to finish.
    pub(crate) async fn close(&self) {
        self.closed.send_replace(true);
        let task = self.sampler.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, History>> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads every route once; then, when a page is open, sends it the update.
    async fn sample(&self) {
        let engine = self.atrion.engine();
        let now = self.atrion.now();
        let at_ms = now.as_nanos() / 1_000_000;
        let keep = self.config.samples();
        let ids = engine.route_ids();
        self.total.store(ids.len(), Ordering::Relaxed);
        {
            let mut history = self.lock();
            let live: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            history.retain(|id, _| live.contains(&**id));
            for id in &ids {
                if history.len() >= self.config.max_routes && !history.contains_key(id.as_str()) {
                    continue;
                }
                let Ok(v) = engine.snapshot(id) else { continue };
                let counts = engine.observer().counts(id);
                let shed_by = engine.observer().shed_by_reason(id);
                let h = history.entry(id.as_str().into()).or_default();
                let (admitted, shed) = h
                    .counts
                    .back()
                    .map_or((0, 0), |&(a, s, _)| (counts.admitted.saturating_sub(a), counts.shed.saturating_sub(s)));
                if h.counts.is_empty() {
                    // Counted before the first sample: measured from zero.
                    h.counts.push_back((0, 0, [0; Reason::ALL.len()]));
                }
                if h.counts.len() > SHED_WINDOW {
                    h.counts.pop_front();
                }
                h.counts.push_back((counts.admitted, counts.shed, shed_by));
                if h.samples.len() >= keep {
                    h.samples.pop_front();
                }
                h.samples.push_back(Sample {
                    at_ms,
                    mode: v.mode,
                    resistance: v.resistance as f32,
                    scar: v.scar as f32,
                    break_point: v.break_point as f32,
                    momentum: v.momentum as f32,
                    mean: v.tuner_mean as f32,
                    sd: v.tuner_var.max(0.0).sqrt() as f32,
                    admitted: u32::try_from(admitted).unwrap_or(u32::MAX),
                    shed: u32::try_from(shed).unwrap_or(u32::MAX),
                });
            }
        }
        self.samples.fetch_add(1, Ordering::AcqRel);
        if self.ticks.receiver_count() > 0 {
            let update = self.update(false).await;
            // A send fails only when every page has gone since the count: nothing to do.
            let _ = self.ticks.send(update);
        } else if let Ok(mut full) = self.full.try_lock() {
            // No page open: the last full update is not kept for nobody.
            *full = None;
        }
    }

    /// The full update of the latest sample, built once per sample whatever the number of
    /// pages that open.
    async fn full(&self) -> Bytes {
        let mut cached = self.full.lock().await;
        let sample = self.samples.load(Ordering::Acquire);
        if let Some((at, frame)) = &*cached
            && *at == sample
        {
            return frame.clone();
        }
        let frame = self.update(true).await;
        *cached = Some((sample, frame.clone()));
        frame
    }

    /// The update as a ready event: `full`, every route with its sparkline; otherwise the
    /// routes whose row changed since the last update sent.
    async fn update(&self, full: bool) -> Bytes {
        let nodes = self.atrion.nodes().await.unwrap_or_default();
        let degraded = self.atrion.sync_stats().await.is_some_and(|st| st.degraded);
        let (policy, versions) = match &self.policy {
            Some(p) => {
                let (desired, reports) = p.known();
                let versions: HashMap<String, u64> = reports.into_iter().map(|r| (r.node, r.version)).collect();
                (Some(PolicySummary { desired, alerts: p.alerts() }), versions)
            }
            None => (None, HashMap::new()),
        };
        let (routes, removed) = self.changed(full);
        let update = Update {
            node: nodes.iter().find(|n| n.this_node).map(|n| n.id.clone()).unwrap_or_default(),
            at_ms: self.atrion.clock().wall_ms(),
            every_ms: u64::try_from(self.config.sample_every.as_millis()).unwrap_or(u64::MAX),
            clock_ms: self.atrion.now().as_nanos() / 1_000_000,
            degraded,
            full,
            routes,
            removed,
            routes_total: self.total.load(Ordering::Relaxed),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let policy_version = versions.get(&n.id).copied();
                    NodeRow { node: NodeView::from(n), policy_version }
                })
                .collect(),
            policy,
        };
        feed::frame(&update)
    }

    /// The rows to send, serialized, and the routes gone. A full update (with sparklines)
    /// leaves the record of what was sent alone: it goes to the pages that open, and the
    /// next delta is taken against the last delta, which their rows match or precede.
    fn changed(&self, full: bool) -> (Vec<Box<RawValue>>, Vec<String>) {
        let raw = |row: &RouteRow| serde_json::value::to_raw_value(row).ok();
        let rows = self.rows(full);
        if full {
            return (rows.iter().filter_map(raw).collect(), Vec::new());
        }
        let mut sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        let mut now: HashMap<String, String> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let Some(json) = raw(row) else { continue };
            if sent.get(&row.route).is_none_or(|before| before.as_str() != json.get()) {
                out.push(json.clone());
            }
            now.insert(row.route.clone(), json.get().to_owned());
        }
        let removed = sent.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        *sent = now;
        (out, removed)
    }

    fn rows(&self, spark: bool) -> Vec<RouteRow> {
        let engine = self.atrion.engine();
        let every = self.config.sample_every.as_secs_f64().max(1e-3);
        let history = self.lock();
        let mut rows: Vec<RouteRow> = history
            .iter()
            .filter_map(|(id, h)| {
                let last = h.samples.back()?;
                let (shed_ratio, shed_by) = shed_window(h);
                let mode_since_ms = engine.observer().last_transition(id).map(|t| t.at.as_nanos() / 1_000_000);
                Some(RouteRow {
                    route: id.to_string(),
                    mode: last.mode,
                    mode_since_ms,
                    held: engine.held(id).unwrap_or_default(),
                    policy: engine.route_pattern(id),
                    resistance: round(f64::from(last.resistance), 100.0),
                    break_point: round(f64::from(last.break_point), 100.0),
                    scar: round(f64::from(last.scar), 100.0),
                    momentum: round(f64::from(last.momentum), 1000.0),
                    rate: round(h.rate(every), 10.0),
                    shed_ratio: round(shed_ratio, 1000.0),
                    shed_by: shed_by.into_iter().map(|(k, v)| (k, round(v, 1000.0))).collect(),
                    spark: spark.then(|| {
                        let skip = h.samples.len().saturating_sub(self.config.sparkline);
                        h.samples.iter().skip(skip).map(|s| round(f64::from(s.resistance), 10.0) as f32).collect()
                    }),
                })
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.route.cmp(&b.route));
        rows
    }
}

/// `x` to the nearest `1 / per`: what a page shows, in fewer bytes than a float's digits.
fn round(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}

impl History {
    /// Decisions per second over the last sample, `every` seconds long.
    fn rate(&self, every: f64) -> f64 {
        self.samples.back().map_or(0.0, |l| f64::from(l.admitted.saturating_add(l.shed)) / every)
    }
}

/// The share shed over the window, and that share by reason.
fn shed_window(h: &History) -> (f64, BTreeMap<&'static str, f64>) {
    let (Some(first), Some(last)) = (h.counts.front(), h.counts.back()) else { return (0.0, BTreeMap::new()) };
    let admitted = last.0.saturating_sub(first.0);
    let shed = last.1.saturating_sub(first.1);
    let total = (admitted + shed) as f64;
    if total == 0.0 {
        return (0.0, BTreeMap::new());
    }
    let by = Reason::ALL
        .iter()
        .filter_map(|r| {
            let n = last.2[r.index()].saturating_sub(first.2[r.index()]);
            (n > 0).then(|| (r.as_str(), n as f64 / total))
        })
        .collect();
    (shed as f64 / total, by)
}

/// Completes when the dashboard closes (or is gone).
async fn closing(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await.map(|_| ());
}

async fn sampler(dashboard: Weak<Dashboard>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let Some(mut closed) = dashboard.upgrade().map(|d| d.closed.subscribe()) else { return };
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = closing(&mut closed) => return,
        }
        let Some(d) = dashboard.upgrade() else { return };
        d.sample().await;
    }
}

/// The dashboard's router: its page and files (`/`, `/assets/{file}`: not API operations,
/// so outside the OpenAPI document), and its data under `/v1/dashboard` (API operations,
/// declared with their OpenAPI operation like the API's). Each answers `404` while the
/// dashboard is off.
pub(crate) fn router() -> OpenApiRouter<Arc<Shared>> {
    OpenApiRouter::new()
        .route("/", axum::routing::get(index))
        .route("/assets/{file}", axum::routing::get(assets))
        .routes(routes!(stream))
        .routes(routes!(route_detail))
        .routes(routes!(route_chart))
}

fn dashboard(s: &Shared) -> Result<&Arc<Dashboard>, Problem> {
    s.dashboard.as_ref().ok_or_else(|| Problem::new(ProblemKind::DashboardDisabled, "this server runs without it"))
}

/// The dashboard's live feed (server-sent events): an `update` event at once with every
/// route's sparkline, then one per sample. A page more than a few updates behind is
/// dropped (browsers reconnect by themselves, and start again from a full update); so is
/// every page when the server shuts down. At most `max_clients` feeds are open at once.
#[utoipa::path(get, path = "/v1/dashboard/stream", tag = "dashboard", security((), ("admin" = [])),
    responses((status = 200, description = "`update` events, each an `Update` as JSON", body = Update, content_type = "text/event-stream"),
        AdminProblems,
        (status = 404, description = "The dashboard is off", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many feeds are open", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))))]
async fn stream(_: Viewer, State(s): State<Arc<Shared>>) -> Result<Response, Problem> {
    let d = dashboard(&s)?.clone();
    let Some(slot) = feed::Slot::take(&d.open, d.config.max_clients) else {
        return Ok(feed::busy(d.config.max_clients));
    };
    // Subscribed before the full update is read: no update between the two is missed.
    let ticks = d.ticks.subscribe();
    let first = d.full().await;
    Ok(feed::response(d.closed.subscribe(), ticks, first, slot))
}

/// A transition on a route's page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TransitionView {
    /// How long ago (ms).
    ago_ms: u64,
    /// The mode before.
    #[schema(value_type = String, example = "operational")]
    from: Mode,
    /// The mode after.
    #[schema(value_type = String, example = "open")]
    to: Mode,
    /// The resistance that caused it (ohms).
    resistance: f64,
}

/// A decision on a route's page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecisionView {
    /// How long ago (ms).
    ago_ms: u64,
    /// `admit` or `shed`.
    #[schema(value_type = String, example = "shed")]
    verdict: atrion::Verdict,
    /// Why.
    #[schema(value_type = String, example = "open")]
    reason: Reason,
    /// The route's mode then.
    #[schema(value_type = String, example = "open")]
    mode: Mode,
    /// The resistance it was made against (ohms).
    resistance: f64,
}

/// A route's page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteDetail {
    /// The route now, as `GET /v1/routes/{route}` shows it.
    route: RouteView,
    /// Decisions per second, over the last sample.
    rate: f64,
    /// The share of decisions shed over the last samples.
    shed_ratio: f64,
    /// That share by reason.
    shed_by: BTreeMap<&'static str, f64>,
    /// The latest mode transitions, newest first.
    transitions: Vec<TransitionView>,
    /// The latest decisions, newest first.
    decisions: Vec<DecisionView>,
}

fn ago(now: Timestamp, at: Timestamp) -> u64 {
    u64::try_from(now.saturating_since(at).as_millis()).unwrap_or(u64::MAX)
}

/// A route's page: the route, its latest transitions and decisions.
#[utoipa::path(get, path = "/v1/dashboard/routes/{route}", tag = "dashboard", security((), ("admin" = [])),
    params(("route" = String, Path, description = "The route id, percent-encoded")),
    responses((status = 200, body = RouteDetail), AdminProblems, (status = 404, description = "No such route, or the dashboard is off", body = Problem, content_type = "application/problem+json")))]
async fn route_detail(
    _: Viewer,
    State(s): State<Arc<Shared>>,
    Path(route): Path<String>,
) -> Result<Json<RouteDetail>, Problem> {
    let d = dashboard(&s)?;
    let view = route_view(&s, &route).await.ok_or_else(|| Problem::unknown_route(format!("no route `{route}`")))?;
    let engine = s.atrion.engine();
    let now = s.atrion.now();
    let every = d.config.sample_every.as_secs_f64().max(1e-3);
    let (rate, shed_ratio, shed_by) = {
        let history = d.lock();
        match history.get(route.as_str()) {
            Some(h) => {
                let (ratio, by) = shed_window(h);
                (h.rate(every), ratio, by)
            }
            None => (0.0, 0.0, BTreeMap::new()),
        }
    };
    let mut transitions: Vec<TransitionView> = engine
        .observer()
        .transitions(&route)
        .into_iter()
        .map(|t| TransitionView { ago_ms: ago(now, t.at), from: t.from, to: t.to, resistance: t.resistance })
        .collect();
    transitions.reverse();
    let decisions = engine
        .observer()
        .recent(&route)
        .into_iter()
        .map(|r| DecisionView {
            ago_ms: ago(now, r.at),
            verdict: r.verdict,
            reason: r.reason,
            mode: r.mode,
            resistance: f64::from(r.resistance),
        })
        .collect();
    Ok(Json(RouteDetail { route: view, rate, shed_ratio, shed_by, transitions, decisions }))
}

/// Which chart of a route.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChartKind {
    /// Resistance, scar and the break point, over the mode timeline.
    #[default]
    Resistance,
    /// The tuner's mean and deviation.
    Tuner,
}

/// `?kind=resistance|tuner`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChartQuery {
    /// `resistance` (default) or `tuner`.
    #[serde(default)]
    // Inline: a parameter's schema is not collected into the document's components, so a
    // reference to it would dangle.
    #[param(inline)]
    kind: ChartKind,
}

/// A route's chart over the dashboard's history, as SVG: resistance, scar and the break
/// point with the mode timeline under them, or the tuner's mean and deviation.
#[utoipa::path(get, path = "/v1/dashboard/routes/{route}/chart.svg", tag = "dashboard", security((), ("admin" = [])),
    params(("route" = String, Path, description = "The route id, percent-encoded"), ChartQuery),
    responses((status = 200, description = "The chart", body = String, content_type = "image/svg+xml"), AdminProblems,
        (status = 404, description = "No such route, or the dashboard is off", body = Problem, content_type = "application/problem+json")))]
async fn route_chart(
    _: Viewer,
    State(s): State<Arc<Shared>>,
    Path(route): Path<String>,
    query: Result<Query<ChartQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let query = crate::problem::query(query)?;
    let d = dashboard(&s)?;
    let (samples, last_ms) = {
        let history = d.lock();
        let h = history.get(route.as_str()).ok_or_else(|| Problem::unknown_route(format!("no route `{route}`")))?;
        (h.samples.iter().copied().collect::<Vec<_>>(), h.samples.back().map_or(0, |l| l.at_ms))
    };
    // The chart spans the history there is (a young route's is short), a minute at least.
    let kept = samples.first().map_or(0.0, |p| last_ms.saturating_sub(p.at_ms) as f64 / 1000.0);
    let window = kept.clamp(60.0, d.config.history.as_secs_f64().max(60.0));
    let points: Vec<chart::Point> = samples
        .iter()
        .map(|p| chart::Point {
            ago_s: -((last_ms.saturating_sub(p.at_ms)) as f64 / 1000.0),
            mode: p.mode,
            resistance: f64::from(p.resistance),
            scar: f64::from(p.scar),
            break_point: f64::from(p.break_point),
            mean: f64::from(p.mean),
            sd: f64::from(p.sd),
        })
        .collect();
    let svg = match query.kind {
        ChartKind::Resistance => chart::resistance(&points, window),
        ChartKind::Tuner => chart::tuner(&points, window),
    }
    .map_err(|e| Problem::new(ProblemKind::Chart, e))?;
    let mut response = svg.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The page's files, built into the binary.
const ASSETS: [(&str, &str, &str); 3] = [
    ("index.html", "text/html; charset=utf-8", include_str!("../../assets/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../assets/app.css")),
];

/// What the page may load: its own files and the server's API, nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Problem::new(ProblemKind::NotFound, format!("no asset `{name}`")).into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Built in, small: a new binary brings a new page, so the browser asks each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `GET /`: the dashboard.
async fn index(State(s): State<Arc<Shared>>) -> Response {
    match dashboard(&s) {
        Ok(_) => asset("index.html"),
        Err(p) => p.into_response(),
    }
}

/// `GET /assets/{file}`
async fn assets(State(s): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    match dashboard(&s) {
        Ok(_) => asset(&file),
        Err(p) => p.into_response(),
    }
}
