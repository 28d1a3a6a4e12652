//! Every kind of problem the server answers with: its status, its type (the slug after
//! `tag:atrion,2026:problem/`) and its title, written here once. Clients match on the type,
//! so a slug never changes; a new refusal is a new kind.

use axum::http::StatusCode;

/// The start of every problem's `type`.
pub(crate) const TYPE_PREFIX: &str = "tag:atrion,2026:problem/";

macro_rules! kinds {
    ($( $(#[$doc:meta])* $name:ident = ($status:ident, $slug:literal, $title:literal), )*) => {
        /// A kind of problem: what went wrong, with the status, type and title that go with it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum ProblemKind {
            $( $(#[$doc])* $name, )*
        }

        impl ProblemKind {
            /// Every kind, in declaration order.
            #[cfg_attr(not(test), allow(dead_code))] // the tests' list
            pub(crate) const ALL: &[ProblemKind] = &[$(ProblemKind::$name),*];

            /// The HTTP status it is answered with.
            pub(crate) fn status(self) -> StatusCode {
                match self { $(ProblemKind::$name => StatusCode::$status,)* }
            }

            /// The slug of its type: `tag:atrion,2026:problem/<slug>`.
            pub(crate) fn slug(self) -> &'static str {
                match self { $(ProblemKind::$name => $slug,)* }
            }

            /// A short, human-readable summary, the same for every problem of the kind
            /// (RFC 9457 §3.1.3).
            pub(crate) fn title(self) -> &'static str {
                match self { $(ProblemKind::$name => $title,)* }
            }
        }
    };
}

kinds! {
    // A request's body, path or query.
    /// The body is not JSON.
    MalformedJson = (BAD_REQUEST, "malformed-json", "The body is not valid JSON"),
    /// JSON, but not of the request's schema (an unknown field, a wrong type, an array).
    InvalidBody = (BAD_REQUEST, "invalid-body", "The body does not match the request's schema"),
    /// Past the body limit.
    BodyTooLarge = (PAYLOAD_TOO_LARGE, "body-too-large", "The request body cannot be read"),
    /// The body could not be read (cut off).
    UnreadableBody = (BAD_REQUEST, "unreadable-body", "The request body cannot be read"),
    /// A field's value is out of its range or rules.
    InvalidValue = (UNPROCESSABLE_ENTITY, "invalid-value", "A value is not valid"),
    /// The query string does not parse, or a parameter is out of range.
    InvalidQuery = (BAD_REQUEST, "invalid-query", "The query string is not valid"),
    /// A percent-escape of the path does not decode to UTF-8.
    InvalidPath = (BAD_REQUEST, "invalid-path", "The path is not valid"),
    /// Proxy mode: the path has no normal form.
    BadPath = (BAD_REQUEST, "bad-path", "The path cannot be normalized"),
    /// Proxy mode: the request target cannot be sent on.
    BadTarget = (BAD_REQUEST, "bad-target", "The request target cannot be forwarded"),
    /// A body of a media type the endpoint does not take.
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "The body's media type is not accepted"),
    /// The request took longer than the server's time limit.
    RequestTimeout = (REQUEST_TIMEOUT, "request-timeout", "The request took too long"),
    /// A path neither the API nor the dashboard has.
    NotFound = (NOT_FOUND, "not-found", "Nothing at this path"),

    // Who may ask.
    /// A Host that is none of the server's names.
    MisdirectedRequest = (MISDIRECTED_REQUEST, "misdirected-request", "Not a host of this server"),
    /// A browser's request from another origin.
    CrossOrigin = (FORBIDDEN, "cross-origin", "Cross-origin requests are refused"),
    /// Decide, report and batch need a client token on this server.
    ClientTokenRequired = (UNAUTHORIZED, "client-token-required", "A client token is required"),
    /// No bearer token where one is needed.
    MissingToken = (UNAUTHORIZED, "missing-token", "A token is needed"),
    /// A bearer token that is none of the server's.
    InvalidToken = (UNAUTHORIZED, "invalid-token", "The admin token is not valid"),
    /// The server has no admin tokens.
    AdminDisabled = (FORBIDDEN, "admin-disabled", "Administration is disabled"),
    /// A source failed to authenticate too often.
    AuthRateLimited = (TOO_MANY_REQUESTS, "auth-rate-limited", "Too many failed authentications"),

    // Limits.
    /// A client past its budget of new routes.
    TooManyNewRoutes = (TOO_MANY_REQUESTS, "too-many-new-routes", "Too many new routes from this client"),
    /// More items than a batch may hold.
    BatchTooLarge = (PAYLOAD_TOO_LARGE, "batch-too-large", "Too many items in one batch"),
    /// Past the connection cap: only health and administration are served.
    TooManyConnections = (SERVICE_UNAVAILABLE, "too-many-connections", "Too many connections"),
    /// Every place among the dashboard's feeds is taken.
    DashboardBusy = (SERVICE_UNAVAILABLE, "dashboard-busy", "Too many dashboard feeds are open"),
    /// The route table is full (an operator's hold on a new route).
    RouteTableFull = (CONFLICT, "route-table-full", "The route table is full"),

    // Decisions, reports and tickets.
    /// The route is not tracked.
    UnknownRoute = (NOT_FOUND, "unknown-route", "No such route"),
    /// Not a ticket.
    TicketMalformed = (UNPROCESSABLE_ENTITY, "ticket-malformed", "Not a ticket"),
    /// A ticket of another node, or of this one before a restart.
    TicketForeign = (UNPROCESSABLE_ENTITY, "ticket-foreign", "The ticket is not of this node"),
    /// A ticket whose signature does not match.
    TicketForged = (UNPROCESSABLE_ENTITY, "ticket-forged", "The ticket is forged"),
    /// A ticket past its time to live.
    TicketExpired = (GONE, "ticket-expired", "The ticket has expired"),
    /// A ticket reported before.
    TicketReplayed = (CONFLICT, "ticket-replayed", "The ticket was already reported"),

    // Proxy mode's refusals: each a 503 with `Retry-After`.
    /// Atrion sheds the route: the upstream is not called.
    Shed = (SERVICE_UNAVAILABLE, "shed", "The route is shed"),
    /// A policy bans this route, or this client on it.
    Banned = (SERVICE_UNAVAILABLE, "banned", "Banned"),
    /// The upstream did not answer.
    UpstreamUnavailable = (BAD_GATEWAY, "upstream-unavailable", "The upstream cannot be reached"),

    // The store, backups and the store switch.
    /// The store cannot be reached; nothing changed.
    StoreUnavailable = (SERVICE_UNAVAILABLE, "store-unavailable", "The store cannot be reached"),
    /// A restore with no line.
    EmptyBackup = (BAD_REQUEST, "empty-backup", "The backup is empty"),
    /// A restore that is not JSON lines of the backup format.
    MalformedBackup = (BAD_REQUEST, "malformed-backup", "The backup is not valid"),
    /// A backup line whose key is of no family of the namespace.
    ForeignKey = (UNPROCESSABLE_ENTITY, "foreign-key", "A backup line's key is not of this namespace"),
    /// A backup line whose value its key's owner cannot read.
    InvalidBackupValue = (UNPROCESSABLE_ENTITY, "invalid-backup-value", "A backup line's value is not valid for its key"),
    /// A sealed backup that the store's keys do not open (the store is not encrypted, or
    /// holds no key of the id the backup names, or a wrong one): the detail names the key id.
    BackupKey = (UNPROCESSABLE_ENTITY, "backup-key", "The backup is sealed with a key this store does not hold"),
    /// This server cannot switch stores.
    SwitchUnavailable = (NOT_FOUND, "switch-unavailable", "This server cannot switch stores"),
    /// The store to switch to is the active one.
    AlreadyActive = (CONFLICT, "already-active", "That store is already active"),
    /// The store to switch to cannot be opened.
    StoreUnopenable = (UNPROCESSABLE_ENTITY, "store-unopenable", "The store cannot be opened"),
    /// The copy could not be made or verified: the old store stays.
    SwitchFailed = (SERVICE_UNAVAILABLE, "switch-failed", "The switch failed: the old store stays"),

    // Policies.
    /// The server runs no policy node.
    PoliciesUnavailable = (NOT_FOUND, "policies-unavailable", "This server runs no policies"),
    /// Desired state moved on, or writers kept racing.
    VersionConflict = (CONFLICT, "version-conflict", "Desired state changed meanwhile"),
    /// A removal of a policy or ban that is not there.
    NoSuchPolicy = (NOT_FOUND, "no-such-policy", "Nothing to remove"),
    /// The validation pipeline refused the change.
    PolicyRejected = (UNPROCESSABLE_ENTITY, "policy-rejected", "The change is rejected"),
    /// The change could not be committed before the request's deadline.
    ChangeTooSlow = (SERVICE_UNAVAILABLE, "change-too-slow", "The change could not be made in time"),
    /// The task committing the change ended early.
    ChangeLost = (SERVICE_UNAVAILABLE, "change-lost", "The change did not finish"),
    /// The task validating the change ended early.
    ValidationLost = (SERVICE_UNAVAILABLE, "validation-lost", "The validation did not finish"),

    // Task leases.
    /// Not a task id of this node.
    TaskUnknown = (NOT_FOUND, "task-unknown", "No such task"),
    /// An authentic task id whose lease is no longer live (aborted, completed, released).
    TaskGone = (GONE, "task-gone", "The task is no longer live"),
    /// A client holding its most live tasks.
    TooManyTasks = (TOO_MANY_REQUESTS, "too-many-tasks", "Too many live tasks from this client"),
    /// The node holds its most live tasks.
    TaskTableFull = (SERVICE_UNAVAILABLE, "task-table-full", "Too many live tasks on this node"),

    // Optional parts that are off.
    /// No metrics exporter.
    MetricsDisabled = (NOT_FOUND, "metrics-disabled", "Metrics are not enabled"),
    /// The dashboard is off.
    DashboardDisabled = (NOT_FOUND, "dashboard-disabled", "The dashboard is off"),
    /// A chart could not be drawn.
    Chart = (INTERNAL_SERVER_ERROR, "chart", "The chart could not be drawn"),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_slug_and_an_error_status() {
        let mut slugs: Vec<&str> = ProblemKind::ALL.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        let n = slugs.len();
        slugs.dedup();
        assert_eq!(slugs.len(), n, "two kinds share a slug");
        for k in ProblemKind::ALL {
            assert!(k.status().is_client_error() || k.status().is_server_error(), "{k:?}");
            assert!(k.slug().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{k:?}");
        }
    }
}
