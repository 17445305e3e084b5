//! The 21 SysOM tools, the local diagnosis tools (`crate::local`) and the MCP server that serves
//! them.
//!
//! Tools are declared as a table ([`ToolDef`]): a parameter struct (its JSON Schema is the input
//! schema), an envelope type (the output schema) and an async function. Arguments are parsed
//! here, not by rmcp, so that a bad argument is a tool error (`isError: true`) naming the field,
//! which the model can read and fix, rather than a protocol error it never sees.

pub mod activation;
mod am;
mod args;
pub mod coalesce;
mod crash;
mod diagnosis;
pub mod envelope;
pub(crate) mod malformed;
pub mod poll;
mod schema;
pub(crate) mod shutdown;
mod tasks;
pub use tasks::Feed as TaskFeed;

use std::{future::Future, pin::Pin, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    handler::server::tool::{schema_for_input, schema_for_output},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
        CustomRequest, CustomResult, ErrorCode, GetPromptRequestParams, GetPromptResponse,
        GetTaskParams, GetTaskResult, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse,
        ServerCapabilities, ServerConfig, Tool, ToolAnnotations, UpdateTaskParams,
    },
    service::{Peer, RequestContext},
};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    audit,
    auth::{Principal, Scope, Scopes},
    config::{self, Config, DiagnosisSettings, ToolSet},
    credentials::Provider,
    metrics, upstream,
};

/// The JSON-RPC error code of a tool call outside the caller's scopes (an implementation-defined
/// server error, -32000..-32099); its `data.required_scope` names the scope.
pub const FORBIDDEN: i32 = -32003;
/// The JSON-RPC error code of a tool call over a per-principal limit; `data.retry_after` says
/// when to come back (seconds).
pub const RATE_LIMITED: i32 = -32004;

type JsonObject = Map<String, Value>;
type BoxFuture = Pin<Box<dyn Future<Output = Value> + Send>>;
type Runner =
    Box<dyn Fn(Arc<Services>, JsonObject, CallCtx) -> Result<BoxFuture, String> + Send + Sync>;

/// What every tool can use: the upstream client and the settings and caches they share.
pub struct Services {
    pub upstream: upstream::Client,
    pub diagnosis: DiagnosisSettings,
    pub activation: Arc<activation::Cache>,
    /// Diagnoses in flight, shared by identical calls; kept across configuration reloads.
    pub flights: coalesce::Flights<coalesce::Outcome>,
    /// Diagnoses started as MCP tasks, shared by identical task calls; kept across reloads.
    pub task_starts: tasks::Starts,
    /// Tells one set of services (credentials, endpoint) from the next after a reload, so
    /// calls are only coalesced when they would reach SysOM with the same identity.
    pub generation: u64,
    /// Where the local tools read kernel interfaces (`/` on a live host).
    pub local_root: std::path::PathBuf,
    /// Which tools are listed.
    pub tool_set: ToolSet,
    /// Seals and opens MCP task handles; re-read on reload (key rotation).
    pub task_keys: Arc<crate::tasks::handle::KeyRing>,
    /// Where `task_keys` came from.
    pub task_key_origin: crate::tasks::keys::Origin,
}

impl Services {
    /// The longest any one tool call may take: the diagnosis time plus every attempt of one
    /// upstream request and its backoff. Nothing a tool does should come near it; it is the
    /// backstop for a stall none of the finer deadlines covers.
    pub fn call_deadline(&self) -> std::time::Duration {
        let upstream = self.upstream.settings();
        self.diagnosis.timeout
            + upstream.request_timeout * (upstream.max_retries + 1)
            + std::time::Duration::from_secs(10)
    }

    /// `activation` is passed in so a reload keeps what was already confirmed.
    pub fn new(
        upstream: upstream::Client,
        diagnosis: DiagnosisSettings,
        activation: Option<Arc<activation::Cache>>,
    ) -> Self {
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            upstream,
            diagnosis,
            activation: activation.unwrap_or_default(),
            flights: coalesce::Flights::default(),
            task_starts: tasks::Starts::default(),
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            local_root: "/".into(),
            tool_set: ToolSet::Auto,
            task_keys: Arc::new(
                crate::tasks::keys::load(None, None, |_| None)
                    .expect("a process key always makes a ring")
                    .0,
            ),
            task_key_origin: crate::tasks::keys::Origin::Process,
        }
    }

    /// Builds what the tools use from a configuration: credentials, the upstream client (its
    /// HTTPS client is built later: see [`SysomServer::warm_up_after`]), the task key ring.
    /// Fails only for a task key file that cannot be used.
    pub fn from_config(
        config: &Config,
        activation: Option<Arc<activation::Cache>>,
    ) -> Result<Self, String> {
        let provider = Arc::new(Provider::from_settings(
            &config.credentials,
            &config::process_env,
        ));
        let explicit = config::process_env(crate::tasks::keys::KEY_FILE_ENV);
        let (task_keys, task_key_origin) = crate::tasks::keys::load(
            explicit.as_deref().map(std::path::Path::new),
            crate::credentials::credentials_dir(&config::process_env).as_deref(),
            |label| provider.derive_key(label),
        )?;
        let http = upstream::LazyHttp::new(&config.upstream);
        let client = upstream::Client::new(
            http,
            config.endpoint.clone(),
            provider,
            config.upstream.clone(),
        );
        let mut services = Self::new(client, config.diagnosis.clone(), activation);
        services.local_root = config.local.root.clone();
        services.tool_set = config.local.tools;
        services.task_keys = Arc::new(task_keys);
        services.task_key_origin = task_key_origin;
        Ok(services)
    }
}

/// Per-call context handed to a tool: cancellation and the way to report progress.
pub struct CallCtx {
    pub cancel: CancellationToken,
    progress: ProgressSink,
    /// The client's session, to tell a cancellation from a lost connection.
    peer: Option<Peer<RoleServer>>,
    /// A sessionless HTTP request: nothing can cancel it but its connection ending.
    sessionless: bool,
}

/// Where a tool's progress goes.
enum ProgressSink {
    None,
    /// To the client, which asked for it with this token.
    Peer(ProgressToken, Peer<RoleServer>),
    /// To every caller attached to a shared diagnosis.
    Shared(coalesce::Reporter<coalesce::Outcome>),
}

impl CallCtx {
    /// The context of a shared diagnosis: stopped by `cancel`, progress to `reporter`.
    pub fn shared(
        cancel: CancellationToken,
        reporter: coalesce::Reporter<coalesce::Outcome>,
    ) -> Self {
        Self {
            cancel,
            progress: ProgressSink::Shared(reporter),
            peer: None,
            sessionless: false,
        }
    }

    /// Whether the client's connection is gone (rather than the call cancelled by the client).
    pub fn connection_lost(&self) -> bool {
        self.sessionless || self.peer.as_ref().is_some_and(Peer::is_transport_closed)
    }

    /// Sends a progress notification if the client asked for them; failures are not fatal.
    pub async fn progress(&self, done: f64, total: f64, message: String) {
        match &self.progress {
            ProgressSink::None => {}
            ProgressSink::Peer(token, peer) => {
                let param = ProgressNotificationParam::new(token.clone(), done)
                    .with_total(total)
                    .with_message(message);
                if let Err(e) = peer.notify_progress(param).await {
                    tracing::debug!(error = %e, "progress notification not delivered");
                }
            }
            ProgressSink::Shared(reporter) => reporter.progress(done, total, message),
        }
    }
}

/// One tool: its MCP declaration, the upstream action it maps to (for logs), the scope a
/// caller needs, and its body.
pub struct ToolDef {
    tool: Tool,
    action: &'static str,
    scope: Scope,
    run: Runner,
    /// A non-Success `code` makes the result `isError: true` (diagnoses: the call failed).
    failure_is_error: bool,
    /// Starts the tool's work as an MCP task, for clients that declare the tasks extension.
    task: Option<tasks::Starter>,
}

/// How a tool behaves, for the MCP annotations.
#[derive(Clone, Copy)]
pub enum Effect {
    /// Only reads or observes.
    ReadOnly,
    /// Changes state, and repeating it changes nothing more.
    Idempotent,
    /// Changes state each time (creates something).
    Creates,
    /// Only reads this host: no cloud or other outside system is involved.
    LocalReadOnly,
}

fn annotations(effect: Effect) -> ToolAnnotations {
    let a = ToolAnnotations::new()
        .read_only(matches!(effect, Effect::ReadOnly | Effect::LocalReadOnly));
    let a = match effect {
        Effect::ReadOnly => a,
        Effect::LocalReadOnly => return a.open_world(false),
        Effect::Idempotent => a.idempotent(true).destructive(false),
        Effect::Creates => a.idempotent(false).destructive(false),
    };
    a.open_world(true)
}

/// Parses tool arguments into `P`, naming the field at fault on error.
pub fn parse_args<P: DeserializeOwned>(args: JsonObject) -> Result<P, String> {
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid arguments: {inner}")
        } else {
            format!("invalid argument `{path}`: {inner}")
        }
    })
}

/// Declares a tool from its parameter type `P`, envelope type `O` and async body `f`. `scope`
/// is what a caller must hold to see and call it: `Read` for listings and results,
/// `Diagnose` for running diagnoses, `Admin` for anything that changes state or fetches URLs.
pub fn tool<P, O, F, Fut>(
    name: &'static str,
    description: &'static str,
    action: &'static str,
    effect: Effect,
    scope: Scope,
    f: F,
) -> ToolDef
where
    P: DeserializeOwned + JsonSchema + 'static,
    O: Serialize + JsonSchema + 'static,
    F: Fn(Arc<Services>, P, CallCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
{
    checked_tool(name, description, action, effect, scope, |_| Ok(()), f)
}

/// [`tool`] with an extra argument check (limits no JSON Schema keyword expresses, such as a
/// bound on a number written as a string), run after the schema check.
pub fn checked_tool<P, O, C, F, Fut>(
    name: &'static str,
    description: &'static str,
    action: &'static str,
    effect: Effect,
    scope: Scope,
    check: C,
    f: F,
) -> ToolDef
where
    P: DeserializeOwned + JsonSchema + 'static,
    O: Serialize + JsonSchema + 'static,
    C: Fn(&JsonObject) -> Result<(), String> + Send + Sync + 'static,
    F: Fn(Arc<Services>, P, CallCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = O> + Send + 'static,
{
    let input = schema::normalise(
        &schema_for_input::<P>()
            .unwrap_or_else(|e| panic!("input schema of {name} is invalid: {e}")),
    );
    let tool = Tool::new(name, description, input.clone())
        .with_raw_output_schema(schema::normalise(&schema_for_output::<O>()))
        .with_annotations(annotations(effect));
    let run: Runner = Box::new(move |services, args, ctx| {
        args::check(&args, &input)?;
        check(&args)?;
        let params = parse_args::<P>(args)?;
        let fut = f(services, params, ctx);
        Ok(Box::pin(async move {
            serde_json::to_value(fut.await).expect("envelopes always serialise")
        }))
    });
    ToolDef {
        tool,
        action,
        scope,
        run,
        failure_is_error: false,
        task: None,
    }
}

/// The 21 cloud tools, in the original server's order.
fn cloud_tools() -> Vec<ToolDef> {
    let mut tools = am::tools();
    tools.extend(diagnosis::tools());
    tools.extend(crash::tools());
    tools.extend(activation::tools());
    tools
}

/// Every tool: the local ones first (they work on any host), then the cloud ones.
fn all_tools() -> Vec<ToolDef> {
    let mut tools = crate::local::tools();
    tools.extend(cloud_tools());
    tools
}

fn is_local(t: &ToolDef) -> bool {
    t.tool.name.starts_with("local_")
}

/// The tools `tools/list` shows: decided once at start, so every session sees the same list.
fn listed(tools: &[ToolDef], set: ToolSet, credentials: bool) -> Vec<Tool> {
    tools
        .iter()
        .filter(|t| match set {
            ToolSet::All => true,
            ToolSet::Local => is_local(t),
            ToolSet::Cloud => !is_local(t),
            ToolSet::Auto => is_local(t) || credentials,
        })
        .map(|t| t.tool.clone())
        .collect()
}

/// The MCP server. Cheap to clone: each HTTP session gets a clone sharing everything.
/// `services` is swapped whole on SIGHUP; calls already running keep the one they started with.
#[derive(Clone)]
pub struct SysomServer {
    services: Arc<ArcSwap<Services>>,
    tools: Arc<Vec<ToolDef>>,
    /// What `tools/list` answers; every tool in `tools` is callable.
    listed: Arc<Vec<Tool>>,
    /// The peer of a legacy SSE session, for logs (Streamable HTTP carries it per request).
    client: Option<std::net::SocketAddr>,
    /// Whom a call speaks for when its request carries no [`Principal`]: the local user on
    /// stdio; nobody (no scope) over HTTP, where every request carries its own.
    fallback: Option<Principal>,
    /// MCP task handles cancelled through this instance.
    cancelled: Arc<tasks::Cancelled>,
    /// The diagnoses task subscriptions follow, one poller each.
    watches: Arc<tasks::Watches>,
    /// Per-principal calls per minute and concurrent diagnoses (unlimited until configured).
    limits: Arc<crate::auth::limits::Limits>,
}

impl SysomServer {
    pub fn new(services: Services) -> Self {
        let tools = all_tools();
        let listed = listed(
            &tools,
            services.tool_set,
            services.upstream.credentials().is_configured(),
        );
        Self {
            services: Arc::new(ArcSwap::from_pointee(services)),
            tools: Arc::new(tools),
            listed: Arc::new(listed),
            client: None,
            fallback: Some(Principal::stdio()),
            cancelled: Arc::default(),
            watches: Arc::default(),
            limits: crate::auth::limits::Limits::new(0, 0),
        }
    }

    /// New per-principal limits (at start and on SIGHUP); counts so far are kept.
    pub fn set_limits(&self, limits: &config::LimitSettings) {
        self.limits
            .set(limits.calls_per_minute, limits.concurrent_diagnoses);
    }

    /// Starts following the task `handle` for a `subscriptions/listen` of `principal`: refused
    /// exactly when `tasks/get` would refuse the handle.
    pub fn watch_task(
        &self,
        handle: &str,
        principal: &str,
    ) -> Result<tasks::Feed, crate::tasks::handle::Refused> {
        tasks::watch(
            &self.services,
            &self.cancelled,
            &self.watches,
            handle,
            principal,
        )
    }

    /// SysOM diagnoses polled for task subscriptions right now.
    pub fn watched_diagnoses(&self) -> usize {
        self.watches.polling()
    }

    /// The per-principal limits, for the HTTP layer's early 429.
    pub fn limits(&self) -> &Arc<crate::auth::limits::Limits> {
        &self.limits
    }

    /// A clone for the HTTP transports: calls are allowed only by the principal their request
    /// carries.
    pub fn for_http(&self) -> Self {
        Self {
            fallback: None,
            ..self.clone()
        }
    }

    /// A clone that reports `client` as the caller of its tool calls.
    pub fn for_client(&self, client: Option<std::net::SocketAddr>) -> Self {
        Self {
            client,
            ..self.clone()
        }
    }

    /// Builds the upstream HTTPS client in the background once `delay` has passed, off the
    /// start-up path (issue 16): called when the server is ready, so reading the CA store does
    /// not compete with the start and its first requests. A cloud call made earlier builds the
    /// client itself. Needs a tokio runtime.
    pub fn warm_up_after(&self, delay: std::time::Duration) {
        let services = self.services.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            services.load().upstream.warm_up();
        });
    }

    /// Replaces the services (new credentials, endpoint or settings) for future calls; their
    /// HTTPS client is built in the background at once (the server is running already).
    pub fn replace_services(&self, mut services: Services) {
        services.upstream.warm_up();
        let running = self.services.load();
        services.flights = running.flights.clone();
        services.task_starts = running.task_starts.clone();
        self.services.store(Arc::new(services));
    }

    /// The activation cache, carried over when services are replaced.
    pub fn activation_cache(&self) -> Arc<activation::Cache> {
        self.services.load().activation.clone()
    }

    pub fn credentials_configured(&self) -> bool {
        self.services.load().upstream.credentials().is_configured()
    }

    /// What `tools/list` shows a principal holding `scopes`: the listed tools it may call.
    pub fn tool_list_for(&self, scopes: Scopes) -> Vec<Tool> {
        self.listed
            .iter()
            .filter(|t| self.tool_scope(&t.name).is_some_and(|s| scopes.contains(s)))
            .cloned()
            .collect()
    }

    /// The scope a caller needs for `name`, if it is a tool.
    pub fn tool_scope(&self, name: &str) -> Option<Scope> {
        self.tools
            .iter()
            .find(|t| t.tool.name == name)
            .map(|t| t.scope)
    }

    /// Whom the request speaks for: the principal the HTTP layer attached, else the fallback,
    /// else an unauthenticated caller holding no scope.
    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Principal {
        ctx.extensions
            .get::<Principal>()
            .or_else(|| {
                ctx.extensions
                    .get::<http::request::Parts>()
                    .and_then(|p| p.extensions.get::<Principal>())
            })
            .or(self.fallback.as_ref())
            .cloned()
            .unwrap_or_else(|| Principal {
                name: "unauthenticated".into(),
                kind: crate::auth::Kind::Anonymous,
                scopes: Scopes::NONE,
            })
    }
}

/// The transport a request came by, for the audit trail.
fn transport(ctx: &RequestContext<RoleServer>) -> &'static str {
    if ctx.extensions.get::<http::request::Parts>().is_some() {
        "streamable_http"
    } else if ctx.extensions.get::<Principal>().is_some() {
        "sse"
    } else {
        "stdio"
    }
}

/// The remote address recorded by the HTTP layer for the request, if any.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

fn client_addr(ctx: &RequestContext<RoleServer>) -> Option<std::net::SocketAddr> {
    ctx.extensions
        .get::<ClientAddr>()
        .or_else(|| {
            ctx.extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.extensions.get::<ClientAddr>())
        })
        .map(|c| c.0)
}

/// Whether the call came as a stateless Streamable HTTP POST (no Mcp-Session-Id, no legacy
/// SSE `sessionId`): such a call has no channel for notifications/cancelled.
fn is_sessionless(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.extensions
        .get::<http::request::Parts>()
        .is_some_and(|p| {
            !p.headers.contains_key("mcp-session-id")
                && !p.uri.query().unwrap_or("").contains("sessionId=")
        })
}

/// Picks the fields the journal record carries out of an envelope.
fn str_field<'a>(v: &'a Value, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("")
}

impl ServerHandler for SysomServer {
    fn get_info(&self) -> ServerConfig {
        // Prompts and resources are declared (empty), as the original FastMCP server did, so that
        // clients asking for them get a normal, cacheable answer.
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_tasks()
                .build(),
        )
            .with_server_info(Implementation::new("sysom-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Alibaba Cloud SysOM OS diagnoses. Call check_sysom_initialed once when the user first \
                 uses these tools; if SysOM is not activated, ask the user before calling initial_sysom.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let scopes = self.principal(&context).scopes;
        Ok(ListToolsResult::with_all_items(self.tool_list_for(scopes)))
    }

    // No prompts or resources: the lists are empty.
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::default())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::default())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::default())
    }

    // Nothing to read or get: the spec's "not found" answers (-32602 with the name asked for).
    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Err(ErrorData::invalid_params(
            format!("Resource not found: {}", request.uri),
            Some(serde_json::json!({ "uri": request.uri })),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Err(ErrorData::invalid_params(
            format!("Unknown prompt: {}", request.name),
            None,
        ))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let services = self.services.load_full();
        let principal = self.principal(&context).id();
        tasks::get(&services, &self.cancelled, request.task_id, &principal).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let services = self.services.load_full();
        tasks::cancel(
            &services,
            &self.cancelled,
            &request.task_id,
            &self.principal(&context).id(),
        )
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let services = self.services.load_full();
        tasks::update(&services, &request.task_id, &self.principal(&context).id())
    }

    /// A request rmcp did not parse as any method it knows: an MCP method with params that do
    /// not fit is -32602 (see [`malformed`]), anything else -32601.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        // rmcp moves `_meta` into the context: a 2026-07-28 request names its version there.
        let not_found = || {
            ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("Method not found: {}", request.method),
                None,
            )
        };
        if context.meta.protocol_version().is_some()
            && malformed::removed_in_stateless_revision(&request.method)
        {
            return Err(not_found());
        }
        Err(
            malformed::invalid_params(&request.method, request.params.as_ref())
                .unwrap_or_else(not_found),
        )
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools
            .iter()
            .find(|t| t.tool.name == name)
            .map(|t| t.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(def) = self.tools.iter().find(|t| t.tool.name == request.name) else {
            // The spec's error for an unknown tool: a protocol error, not a tool result.
            return Err(ErrorData::invalid_params(
                format!("Unknown tool: {}", request.name),
                None,
            ));
        };
        let started = Instant::now();
        let addr = client_addr(&context).or(self.client);
        let client = addr
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|| "stdio".into());
        let principal = self.principal(&context);
        let mut record = audit::Record {
            client: client.clone(),
            transport: transport(&context),
            tool: def.tool.name.to_string(),
            scope: def.scope.as_str(),
            upstream_action: def.action,
            args: request.arguments.clone().map(Value::Object),
            ..audit::Record::by(&principal)
        };
        if !principal.may(def.scope) {
            let message = format!(
                "tool {} needs scope {}, which this credential does not hold",
                def.tool.name, def.scope
            );
            record.decision = Some(audit::Decision::DeniedScope);
            record.outcome = "Forbidden".into();
            record.message = format!("tool call {} refused: needs {}", def.tool.name, def.scope);
            record.emit();
            return Err(ErrorData::new(
                rmcp::model::ErrorCode(FORBIDDEN),
                message,
                Some(serde_json::json!({ "required_scope": def.scope.as_str() })),
            ));
        }
        // Counted here; a diagnosis holds its slot until the call returns.
        let _slot = match self
            .limits
            .admit(&principal.id(), def.scope == Scope::Diagnose)
        {
            Ok(slot) => slot,
            Err(refusal) => {
                let retry = refusal.retry_after().as_secs().max(1);
                record.decision = Some(audit::Decision::RateLimited);
                record.outcome = "RateLimited".into();
                record.message =
                    format!("tool call {} refused: {}", def.tool.name, refusal.message());
                record.emit();
                return Err(ErrorData::new(
                    rmcp::model::ErrorCode(RATE_LIMITED),
                    refusal.message(),
                    Some(serde_json::json!({ "retry_after": retry })),
                ));
            }
        };
        record.decision = Some(audit::Decision::Allowed);
        if let Some(start) = &def.task
            && tasks::client_wants_tasks(&context)
        {
            let (response, outcome) = self
                .start_task(def, start, request.arguments, principal.id())
                .await;
            record.duration_ms = started.elapsed().as_millis() as u64;
            record.outcome = outcome;
            record.message = format!(
                "tool call {} by {}: {} (MCP task)",
                def.tool.name, principal, record.outcome
            );
            record.emit();
            return Ok(response);
        }
        let ctx = CallCtx {
            cancel: context.ct.clone(),
            progress: match context.meta.get_progress_token() {
                Some(token) => ProgressSink::Peer(token, context.peer.clone()),
                None => ProgressSink::None,
            },
            peer: Some(context.peer.clone()),
            sessionless: is_sessionless(&context),
        };
        let args = request.arguments.unwrap_or_default();
        let _running = metrics::ToolRunning::start();
        let services = self.services.load_full();
        let deadline = services.call_deadline();
        let outcome = (def.run)(services, args, ctx);
        let (result, upstream_request_id) = match outcome {
            Ok(fut) => tokio::select! {
                finished = tokio::time::timeout(deadline, upstream::with_request_id(fut)) => {
                    match finished {
                        Ok((envelope, id)) => (Ok(envelope), id),
                        Err(_) => (
                            Err(format!(
                                "the tool call did not finish within {deadline:?} and was abandoned"
                            )),
                            None,
                        ),
                    }
                }
                () = shutdown::cut_off() => {
                    record.duration_ms = started.elapsed().as_millis() as u64;
                    record.outcome = "ShuttingDown".into();
                    record.message = format!(
                        "tool call {} cut off by the shutdown",
                        def.tool.name
                    );
                    record.emit();
                    return Err(shutdown::error());
                }
            },
            Err(message) => (Err(message), None),
        };
        let millis = started.elapsed().as_millis() as u64;
        record.duration_ms = millis;
        record.request_id = upstream_request_id.clone().unwrap_or_default();
        let client = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "stdio".into());
        match result {
            Ok(envelope) => {
                let code = str_field(&envelope, &["code"]);
                let code = if code.is_empty() {
                    envelope::SUCCESS
                } else {
                    code
                };
                metrics::record_tool_call(def.name(), code, started.elapsed());
                record.outcome = code.to_string();
                record.task_id = str_field(&envelope, &["task_id"]).to_string();
                record.message = format!("tool call {} by {}: {code}", def.tool.name, principal);
                record.emit();
                tracing::info!(
                    sysom_tool = %def.tool.name,
                    sysom_task_id = str_field(&envelope, &["task_id"]),
                    sysom_upstream_action = def.action,
                    sysom_request_id = upstream_request_id.as_deref().unwrap_or(""),
                    sysom_client_addr = %client,
                    sysom_duration_ms = millis,
                    sysom_result_code = code,
                    "tool call {} finished: {}", def.tool.name, code
                );
                // Same envelope either way; a failed diagnosis is also a failed call.
                Ok(tasks::tool_result(envelope, def.failure_is_error).into())
            }
            Err(message) => {
                metrics::record_tool_call(def.name(), "InvalidArguments", started.elapsed());
                record.outcome = "InvalidArguments".into();
                record.message = format!(
                    "tool call {} by {}: InvalidArguments",
                    def.tool.name, principal
                );
                record.emit();
                tracing::info!(
                    sysom_tool = %def.tool.name,
                    sysom_upstream_action = def.action,
                    sysom_client_addr = %client,
                    sysom_duration_ms = millis,
                    sysom_result_code = "InvalidArguments",
                    "tool call {} rejected: {}", def.tool.name, message
                );
                Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into())
            }
        }
    }
}

impl SysomServer {
    /// Starts `def` as an MCP task: the diagnosis is created upstream now, the client gets its
    /// sealed handle and follows it with `tasks/get` (through any instance sharing the key).
    async fn start_task(
        &self,
        def: &ToolDef,
        start: &tasks::Starter,
        arguments: Option<JsonObject>,
        principal: String,
    ) -> (CallToolResponse, String) {
        let services = self.services.load_full();
        let fut = match start(services.clone(), arguments.unwrap_or_default()) {
            Ok(fut) => fut,
            Err(message) => {
                metrics::record_tool_call(def.name(), "InvalidArguments", Default::default());
                let result = CallToolResult::error(vec![ContentBlock::text(message)]);
                return (result.into(), "InvalidArguments".into());
            }
        };
        let deadline = services.call_deadline();
        match tokio::time::timeout(deadline, fut).await {
            Ok(Ok(started)) => {
                let created = tasks::created(&services, principal, started);
                (CallToolResponse::Task(created), "TaskCreated".into())
            }
            Ok(Err(envelope)) => {
                let code = str_field(&envelope, &["code"]).to_string();
                metrics::record_tool_call(def.name(), &code, Default::default());
                (
                    tasks::tool_result(envelope, def.failure_is_error).into(),
                    code,
                )
            }
            Err(_) => {
                let result = CallToolResult::error(vec![ContentBlock::text(format!(
                    "starting the diagnosis did not finish within {deadline:?}"
                ))]);
                (result.into(), "TaskCreateFailed".into())
            }
        }
    }
}

impl ToolDef {
    fn name(&self) -> &str {
        &self.tool.name
    }

    /// The scope a caller needs for this tool.
    #[cfg(test)]
    pub fn scope(&self) -> Scope {
        self.scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_one_tools_with_unique_names_and_output_schemas() {
        let tools = cloud_tools();
        assert_eq!(tools.len(), 21);
        let mut names: Vec<_> = tools.iter().map(|t| t.tool.name.to_string()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 21);
        assert!(tools.iter().all(|t| t.tool.output_schema.is_some()));
        assert!(
            tools
                .iter()
                .all(|t| t.tool.description.as_deref().unwrap_or("").len() > 80)
        );
    }

    #[test]
    fn every_tool_declares_its_scope() {
        use crate::auth::Scope::{Admin, Diagnose, Read};
        let want = [
            ("list_all_instances", Read),
            ("list_pods_of_instance", Read),
            ("list_clusters", Read),
            ("list_instances", Read),
            ("memgraph", Diagnose),
            ("javamem", Diagnose),
            ("oomcheck", Diagnose),
            ("iofsstat", Diagnose),
            ("iodiagnose", Diagnose),
            ("packetdrop", Diagnose),
            ("netjitter", Diagnose),
            ("delay", Diagnose),
            ("loadtask", Diagnose),
            ("vmcore", Diagnose),
            ("diskanalysis", Diagnose),
            ("create_vmcore_diagnosis_task", Admin),
            ("create_dmesg_diagnosis_task", Admin),
            ("query_diagnosis_task", Read),
            ("list_history_tasks", Read),
            ("initial_sysom", Admin),
            ("check_sysom_initialed", Read),
        ];
        let tools = all_tools();
        for (name, scope) in want {
            let t = tools.iter().find(|t| t.name() == name).expect(name);
            assert_eq!(t.scope(), scope, "{name}");
        }
        // Whatever changes state needs admin.
        for t in &tools {
            if t.tool.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(false) {
                assert_eq!(t.scope(), Admin, "{}", t.name());
            }
        }
    }

    fn server(tools: &str) -> SysomServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = config::ServerArgs {
            config: Some("/dev/null".into()),
            tools: Some(tools.into()),
            ..Default::default()
        };
        let cfg = config::load(&args, &|_| None).expect("defaults are valid");
        SysomServer::new(Services::from_config(&cfg, None).expect("no task key file is named"))
    }

    #[test]
    fn tools_list_holds_exactly_the_tools_of_the_scopes() {
        let server = server("all");
        let all = server.tool_list_for(Scopes::ALL);
        assert_eq!(all.len(), server.tools.len());
        for scopes in Scopes::every() {
            let listed = server.tool_list_for(scopes);
            for t in server.tools.iter() {
                let shown = listed.iter().any(|l| l.name == t.tool.name);
                assert_eq!(shown, scopes.contains(t.scope), "{} for {scopes}", t.name());
            }
        }
        // The local tools need the diagnose scope, and only that.
        let diagnose = server.tool_list_for(Scopes::NONE.with(Scope::Diagnose));
        assert!(
            diagnose
                .iter()
                .filter(|t| t.name.starts_with("local_"))
                .count()
                >= 11
        );
        let read_admin = Scopes::NONE.with(Scope::Read).with(Scope::Admin);
        assert!(
            server
                .tool_list_for(read_admin)
                .iter()
                .all(|t| !t.name.starts_with("local_"))
        );
        assert!(server.tool_list_for(Scopes::NONE).is_empty());
        assert_eq!(server.tool_scope("initial_sysom"), Some(Scope::Admin));
        assert_eq!(server.tool_scope("local_triage"), Some(Scope::Diagnose));
        assert_eq!(server.tool_scope("nope"), None);
    }

    #[test]
    fn stdio_keeps_every_scope_http_has_none_without_a_principal() {
        let stdio = server("cloud");
        assert_eq!(stdio.fallback.as_ref().map(|p| p.scopes), Some(Scopes::ALL));
        assert!(stdio.for_http().fallback.is_none());
    }

    #[test]
    fn parse_args_names_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            uid: String,
            timeout: Option<String>,
        }
        let mut m = JsonObject::new();
        m.insert("uid".into(), Value::from("u"));
        m.insert("timeout".into(), Value::from(5));
        let err = parse_args::<P>(m).unwrap_err();
        assert!(err.contains("`timeout`"), "{err}");
        let err = parse_args::<P>(JsonObject::new()).unwrap_err();
        assert!(err.contains("uid"), "{err}");
    }
}
