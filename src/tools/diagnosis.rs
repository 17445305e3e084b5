//! The 11 diagnosis tools and the one routine they share: start a SysOM diagnosis with
//! `InvokeDiagnosis`, then poll `GetDiagnosisResult` until it succeeds, fails or runs out of time,
//! reporting progress and stopping at once when the client cancels.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{
    CallCtx, Effect, Services, ToolDef, checked_tool, coalesce,
    envelope::{self, DiagnosisResult},
    poll::Schedule,
};
use crate::auth::Scope;
use crate::upstream::{ops, snippet};

/// The note every SysOM tool description starts with.
macro_rules! activation_note {
    () => {
        "Before the first SysOM tool call in a conversation, call check_sysom_initialed once \
         (no need to repeat it once confirmed); if SysOM is not activated, ask the user before \
         calling initial_sysom, or point them to https://alinux.console.aliyun.com. "
    };
}
pub(crate) use activation_note;

macro_rules! node_mode {
    () => {
        "Node mode only: channel=\"ecs\" (or \"eflo\" for eFlo compute nodes) and instance = the \
         instance ID. "
    };
}

/// The history-mode sentence of delay, packetdrop and netjitter.
macro_rules! history_mode {
    () => {
        " History mode: is_history=true with anomaly_start/anomaly_end analyses a past anomaly window \
         instead of observing now."
    };
}

/// How one diagnosis tool builds its `params` JSON.
struct Spec {
    service: &'static str,
    /// Fields sent with this value when the caller gave null or an empty string.
    defaults: &'static [(&'static str, &'static str)],
    /// Fields whose wire name differs from the tool parameter name.
    renames: &'static [(&'static str, &'static str)],
    /// Seconds-valued fields (numbers written as strings) and the most SysOM accepts for them;
    /// over it SysOM silently clamps or resets the value, so it is an argument error here.
    limits: &'static [(&'static str, u32)],
    /// Boolean parameters this service takes as 0/1.
    int_flags: &'static [&'static str],
}

impl Spec {
    /// A diagnosis whose parameters go out as they are.
    const fn plain(service: &'static str) -> Self {
        Self {
            service,
            defaults: NONE,
            renames: NONE,
            limits: &[],
            int_flags: &[],
        }
    }
}

/// The channels SysOM diagnoses through: ECS nodes, pods in a cluster, eFlo compute nodes.
const CHANNELS: &[&str] = &["ecs", "auto", "eflo"];

/// The checks the input schema cannot express: the channel and the service's limits.
fn check_args(spec: &Spec, args: &Map<String, Value>) -> Result<(), String> {
    if let Some(channel) = args.get("channel").and_then(Value::as_str)
        && !CHANNELS.contains(&channel)
    {
        return Err(format!(
            "invalid argument `channel`: must be \"ecs\", \"auto\" or \"eflo\", got {channel:?}"
        ));
    }
    for (field, max) in spec.limits {
        let Some(raw) = args.get(*field).and_then(Value::as_str) else {
            continue;
        };
        let raw = raw.trim();
        if raw.is_empty() {
            continue; // the default applies
        }
        let over = |why: &str| {
            format!(
                "invalid argument `{field}`: {} accepts at most {max} seconds (SysOM limit), {why}",
                spec.service
            )
        };
        match raw.parse::<f64>() {
            Ok(n) if n <= f64::from(*max) => {}
            Ok(_) => return Err(over(&format!("got {raw}"))),
            Err(_) => return Err(over(&format!("and it must be a number, got {raw:?}"))),
        }
    }
    Ok(())
}

/// Builds the InvokeDiagnosis `params` object from the tool arguments (as serialised by the
/// parameter struct): region, `_hide`, the tool fields without nulls, defaults, then the
/// `marker` key set to "mcp" (SysOM's gateway strips the older `source` key).
fn diagnosis_params(spec: &Spec, args: &Map<String, Value>, marker: &str) -> Map<String, Value> {
    let mut params = Map::new();
    params.insert(
        "region".into(),
        args.get("region").cloned().unwrap_or(Value::Null),
    );
    params.insert("_hide".into(), "0".into());
    for (key, value) in args {
        if matches!(key.as_str(), "uid" | "region" | "channel") || value.is_null() {
            continue;
        }
        let wire = spec
            .renames
            .iter()
            .find(|(from, _)| from == key)
            .map_or(key.as_str(), |(_, to)| to);
        let value = match value {
            Value::Bool(b) if spec.int_flags.contains(&key.as_str()) => Value::from(u8::from(*b)),
            other => other.clone(),
        };
        params.insert(wire.to_string(), value);
    }
    for (key, default) in spec.defaults {
        let missing = params
            .get(*key)
            .is_none_or(|v| v.as_str().is_some_and(str::is_empty));
        if missing {
            params.insert((*key).to_string(), (*default).into());
        }
    }
    params.insert(marker.to_string(), "mcp".into());
    params
}

fn outcome(code: &str, message: String, task_id: &str) -> DiagnosisResult {
    DiagnosisResult {
        code: code.into(),
        message,
        data: Value::Null,
        task_id: task_id.into(),
        result: Map::new(),
    }
}

/// Starts one diagnosis with `InvokeDiagnosis` and returns SysOM's task id, or the envelope
/// saying why it could not start. `args` is the tool's parameter struct serialised.
async fn start(
    services: &Services,
    spec: &Spec,
    args: &Map<String, Value>,
) -> Result<String, DiagnosisResult> {
    let channel = args.get("channel").cloned().unwrap_or(Value::Null);
    let marker = &services.diagnosis.source_marker;
    let params = Value::Object(diagnosis_params(spec, args, marker)).to_string();
    let body = json!({"channel": channel, "params": params, "service_name": spec.service});
    let created = match services
        .upstream
        .call(&ops::INVOKE_DIAGNOSIS, &[], Some(&body))
        .await
    {
        Ok(v) => v,
        Err(e) => return Err(outcome("TaskCreateFailed", envelope::describe(&e), "")),
    };
    if let Some((_, message)) = envelope::business_failure(&created) {
        return Err(outcome("TaskCreateFailed", message, ""));
    }
    created
        .pointer("/data/task_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            outcome(
                "TaskCreateFailed",
                format!(
                    "InvokeDiagnosis answered without data.task_id: {}",
                    snippet(&created.to_string())
                ),
                "",
            )
        })
}

/// What one `GetDiagnosisResult` said about a task.
pub(crate) enum Polled {
    /// Still running, with SysOM's status word.
    Running(String),
    /// Finished (or failed): the envelope to return.
    Done(DiagnosisResult),
}

/// Asks SysOM once how the diagnosis `task_id` is doing.
pub(crate) async fn poll_once(services: &Services, task_id: &str) -> Polled {
    let query = [("task_id".to_string(), task_id.to_string())];
    let reply = match services
        .upstream
        .call(&ops::GET_DIAGNOSIS_RESULT, &query, None)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            return Polled::Done(outcome("GetResultFailed", envelope::describe(&e), task_id));
        }
    };
    interpret(reply, task_id)
}

fn interpret(reply: Value, task_id: &str) -> Polled {
    if let Some((_, message)) = envelope::business_failure(&reply) {
        return Polled::Done(outcome("GetResultFailed", message, task_id));
    }
    let data = reply.get("data").cloned().unwrap_or(Value::Null);
    let status = data.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "Success" => Polled::Done(finished(data, task_id)),
        "Fail" => {
            let err = data
                .get("err_msg")
                .and_then(Value::as_str)
                .unwrap_or("the diagnosis failed without an error message");
            Polled::Done(outcome(
                "TaskExecuteFailed",
                envelope::with_permission_hint(err.to_string()),
                task_id,
            ))
        }
        "" => Polled::Running("Running".into()),
        other => Polled::Running(other.to_string()),
    }
}

/// The envelope of a diagnosis that did not finish in time.
pub(crate) fn timed_out(timeout: std::time::Duration, task_id: &str) -> DiagnosisResult {
    outcome(
        "TaskTimeout",
        format!(
            "The diagnosis did not finish within {} seconds; task_id: {task_id}. It may still \
             finish on the SysOM side.",
            timeout.as_secs()
        ),
        task_id,
    )
}

/// Runs one diagnosis end to end. `args` is the tool's parameter struct serialised.
async fn run(
    services: Arc<Services>,
    spec: &Spec,
    args: Map<String, Value>,
    ctx: CallCtx,
) -> DiagnosisResult {
    let task_id = match start(&services, spec, &args).await {
        Ok(id) => id,
        Err(failed) => return failed,
    };
    let upstream = &services.upstream;

    let settings = &services.diagnosis;
    let mut schedule = Schedule::new(settings.poll_interval, settings.poll_max_interval);
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let total = settings.timeout.as_secs_f64();
    let query = [("task_id".to_string(), task_id.clone())];
    let timed_out = || timed_out(settings.timeout, &task_id);
    loop {
        // The last poll happens at the deadline rather than one interval before it.
        let delay = schedule
            .next_delay()
            .min(deadline.saturating_duration_since(Instant::now()));
        if delay.is_zero() {
            return timed_out();
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return outcome("Cancelled", "The client cancelled the call; polling stopped.".into(), &task_id);
            }
            _ = tokio::time::sleep(delay) => {}
        }
        let polled = tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return outcome("Cancelled", "The client cancelled the call; polling stopped.".into(), &task_id);
            }
            // A poll that is still streaming in when the diagnosis time is up ends the call too.
            _ = tokio::time::sleep_until(deadline) => return timed_out(),
            r = upstream.call(&ops::GET_DIAGNOSIS_RESULT, &query, None) => r,
        };
        let reply = match polled {
            Ok(v) => v,
            Err(e) => return outcome("GetResultFailed", envelope::describe(&e), &task_id),
        };
        match interpret(reply, &task_id) {
            Polled::Done(result) => return result,
            Polled::Running(shown) => {
                let elapsed = started.elapsed().as_secs_f64().min(total);
                ctx.progress(
                    elapsed,
                    total,
                    format!("{} task {task_id}: {shown}", spec.service),
                )
                .await;
            }
        }
    }
}

/// Turns a successful `data` into the envelope; `data.result` is a JSON string (or object).
fn finished(data: Value, task_id: &str) -> DiagnosisResult {
    let raw = data.get("result").cloned().unwrap_or(Value::Null);
    let parsed = match &raw {
        Value::Object(m) => Ok(m.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Ok(Map::from_iter([("value".to_string(), other)])),
            Err(e) => Err((e.to_string(), s.clone())),
        },
        Value::Null => Ok(Map::new()),
        other => Ok(Map::from_iter([("value".to_string(), other.clone())])),
    };
    match parsed {
        Ok(result) => DiagnosisResult {
            code: envelope::SUCCESS.into(),
            message: String::new(),
            data: Value::Null,
            task_id: task_id.into(),
            result,
        },
        Err((err, text)) => DiagnosisResult {
            code: "ResultParseFailed".into(),
            message: format!(
                "The diagnosis result is not valid JSON: {err}; raw result: {}",
                snippet(&text)
            ),
            data: Value::Null,
            task_id: task_id.into(),
            result: Map::from_iter([("raw".to_string(), Value::String(text))]),
        },
    }
}

/// Identical calls (same credentials, service and arguments) share one diagnosis, with or
/// without MCP tasks.
fn coalescing_key(services: &Services, spec: &Spec, args: &Map<String, Value>) -> String {
    format!(
        "{}\0{}\0{}",
        services.generation,
        spec.service,
        Value::Object(args.clone())
    )
}

/// Declares one diagnosis tool: the parameter struct `P` plus its [`Spec`].
fn diagnosis_tool<P>(name: &'static str, description: &'static str, spec: &'static Spec) -> ToolDef
where
    P: Serialize + for<'de> Deserialize<'de> + JsonSchema + Send + 'static,
{
    let mut def = checked_tool::<P, DiagnosisResult, _, _, _>(
        name,
        description,
        "InvokeDiagnosis",
        Effect::ReadOnly,
        Scope::Diagnose,
        move |args| check_args(spec, args),
        move |services, params, ctx| {
            let args = match serde_json::to_value(&params) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let key = coalescing_key(&services, spec, &args);
            async move {
                coalesce::diagnosis(services, key, ctx, move |services, ctx| {
                    run(services, spec, args, ctx)
                })
                .await
                .unwrap_or_else(|| {
                    outcome(
                        "Cancelled",
                        "The client cancelled the call; polling stopped.".into(),
                        "",
                    )
                })
            }
        },
    );
    def.failure_is_error = true;
    let input = def.tool.input_schema.clone();
    def.task = Some(Box::new(move |services, args| {
        super::args::check(&args, &input)?;
        check_args(spec, &args)?;
        let params = super::parse_args::<P>(args)?;
        let args = match serde_json::to_value(&params) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(Box::pin(async move {
            let region = args
                .get("region")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = coalescing_key(&services, spec, &args);
            let started = async {
                match start(&services, spec, &args).await {
                    Ok(task_id) => Ok(super::tasks::Started {
                        task_id,
                        region,
                        service: spec.service,
                    }),
                    Err(failed) => Err(serde_json::to_value(failed).expect("envelopes serialise")),
                }
            };
            let starts = services.task_starts.clone();
            starts
                .start_or_attach(&services, key, services.diagnosis.timeout, started)
                .await
        }))
    }));
    def
}

// ---- parameter structs ------------------------------------------------------------------

/// The fields every diagnosis tool takes: whose account, which region, and how SysOM reaches
/// the target.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Routing {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
    /// Region of the instance, e.g. cn-hangzhou
    region: String,
    /// Diagnosis channel: "ecs" for a node (an ECS instance); "auto" for a pod in a cluster
    /// (memgraph, javamem and oomcheck only); "eflo" for an eFlo compute node
    channel: String,
}

/// The cluster fields of pod mode (channel "auto").
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct PodTarget {
    /// Cluster type for pod mode: ackClusters (ACK managed), ackServerlessClusters (ACK
    /// Serverless) or acsClusters (ACS)
    #[serde(default, rename = "clusterType")]
    cluster_type: Option<String>,
    /// Cluster ID (pod mode)
    #[serde(default, rename = "clusterId")]
    cluster_id: Option<String>,
    /// Pod namespace (pod mode)
    #[serde(default)]
    namespace: Option<String>,
}

/// memgraph: node or pod mode.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct MemgraphParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID (node mode)
    #[serde(default)]
    instance: Option<String>,
    /// Pod name (optional in node mode, required in pod mode)
    #[serde(default)]
    pod: Option<String>,
    #[serde(flatten)]
    cluster: PodTarget,
    /// Also profile memory allocations (default false)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profiling_on: Option<bool>,
}

/// History mode of delay, packetdrop and netjitter: analyse a past anomaly window.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct History {
    /// true: analyse the recorded anomaly window below instead of observing now (default false)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_history: Option<bool>,
    /// Start of the anomaly window (history mode), e.g. a Unix timestamp
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anomaly_start: Option<String>,
    /// End of the anomaly window (history mode), e.g. a Unix timestamp
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anomaly_end: Option<String>,
}

fn zero() -> Option<String> {
    Some("0".into())
}

/// javamem: instance always required.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct JavamemParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
    /// PID of the Java process (node mode: give pid or pod)
    #[serde(default)]
    pid: Option<String>,
    /// Pod name; without pid, the pod's PID 1 is diagnosed (single-container pods)
    #[serde(default)]
    pod: Option<String>,
    /// Seconds of JNI memory-allocation profiling; "0" disables it
    #[serde(default = "zero")]
    duration: Option<String>,
    #[serde(flatten)]
    cluster: PodTarget,
}

/// oomcheck: node or pod mode, optional timestamp.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct OomcheckParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID (node mode)
    #[serde(default)]
    instance: Option<String>,
    /// Pod name
    #[serde(default)]
    pod: Option<String>,
    /// Unix timestamp: analyse the OOM event closest to it (default: the latest)
    #[serde(default)]
    time: Option<String>,
    #[serde(flatten)]
    cluster: PodTarget,
}

/// iofsstat.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct IofsstatParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
    /// Seconds to collect, default 15, at most 30
    #[serde(default)]
    timeout: Option<String>,
    /// Disk to watch, e.g. sda (default: all disks)
    #[serde(default)]
    disk: Option<String>,
}

/// iodiagnose.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct IodiagnoseParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
    /// Seconds to diagnose, default 30, at most 300; less than 30 is not recommended
    #[serde(default)]
    timeout: Option<String>,
}

/// Tools that take only the instance.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct InstanceParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
}

/// netjitter and delay.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct JitterParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
    /// Seconds to observe (server default 20, at most 60)
    #[serde(default)]
    duration: Option<String>,
    /// Jitter threshold in milliseconds (server default: 10 for netjitter, 20 for delay)
    #[serde(default)]
    threshold: Option<String>,
    #[serde(flatten)]
    history: History,
}

/// packetdrop: the instance, optionally in history mode.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct PacketdropParams {
    #[serde(flatten)]
    routing: Routing,
    /// ECS instance ID
    instance: String,
    #[serde(flatten)]
    history: History,
}

// ---- the table --------------------------------------------------------------------------

const NONE: &[(&str, &str)] = &[];

static MEMGRAPH: Spec = Spec::plain("memgraph");
static JAVAMEM: Spec = Spec {
    service: "javamem",
    defaults: &[("duration", "0")],
    renames: &[("pid", "Pid")],
    limits: &[],
    int_flags: &[],
};
static OOMCHECK: Spec = Spec::plain("oomcheck");
// The limits and flag encodings are those the SysOM team documents (sysom-openapi.md, section 5).
static IOFSSTAT: Spec = Spec {
    service: "iofsstat",
    defaults: &[("timeout", "15")],
    renames: NONE,
    limits: &[("timeout", 30)],
    int_flags: &[],
};
static IODIAGNOSE: Spec = Spec {
    service: "iodiagnose",
    defaults: &[("timeout", "30")],
    renames: NONE,
    limits: &[("timeout", 300)],
    int_flags: &[],
};
static PACKETDROP: Spec = Spec::plain("packetdrop");
static NETJITTER: Spec = Spec {
    limits: &[("duration", 60)],
    ..Spec::plain("netjitter")
};
static DELAY: Spec = Spec {
    limits: &[("duration", 60)],
    // delay documents is_history as 0/1; packetdrop and netjitter take a boolean.
    int_flags: &["is_history"],
    ..Spec::plain("delay")
};
static LOADTASK: Spec = Spec::plain("loadtask");
static VMCORE: Spec = Spec::plain("vmcore");
static DISKANALYSIS: Spec = Spec::plain("diskanalysis");

pub(super) fn tools() -> Vec<ToolDef> {
    vec![
        diagnosis_tool::<MemgraphParams>(
            "memgraph",
            concat!(
                activation_note!(),
                "Memory panorama: use when memory usage is high and the cause is unclear. Scans system memory, \
             separates kernel from application memory, and lists the top 30 applications by memory, file \
             cache and shared-memory cache. Node mode: channel=\"ecs\", instance (optionally pod). Pod mode: \
             channel=\"auto\" with clusterType, clusterId, namespace and pod. profiling_on=true also \
             profiles allocations. Takes tens of seconds; returns code, message, task_id and the parsed \
             report in result."
            ),
            &MEMGRAPH,
        ),
        diagnosis_tool::<JavamemParams>(
            "javamem",
            concat!(
                activation_note!(),
                "Java memory diagnosis: heap and non-heap breakdown of a Java process, detecting leaks and \
             overflows. Node mode: channel=\"ecs\", instance plus pid or pod (without pid the pod's PID 1 is \
             used, so the pod should have a single container); duration enables JNI allocation profiling for \
             that many seconds (default \"0\" = off). Pod mode: channel=\"auto\" with clusterType, clusterId, \
             namespace and pod."
            ),
            &JAVAMEM,
        ),
        diagnosis_tool::<OomcheckParams>(
            "oomcheck",
            concat!(
                activation_note!(),
                "OOM diagnosis: finds why an out-of-memory kill happened (global memory shortage, cgroup limit, \
             parent cgroup limit, NUMA node shortage through cpuset.mems, shared memory above 30% of the \
             cgroup's user memory) and suggests fixes. time (Unix timestamp) picks the OOM event nearest to \
             it, otherwise the latest. Node mode (channel=\"ecs\", instance) or pod mode (channel=\"auto\", \
             clusterType, clusterId, namespace, pod)."
            ),
            &OOMCHECK,
        ),
        diagnosis_tool::<IofsstatParams>(
            "iofsstat",
            concat!(
                activation_note!(),
                node_mode!(),
                "IO traffic attribution: IO throughput per disk/partition and per process, for sudden IO bursts. \
             timeout = seconds to collect (default \"15\", at most 30); disk = e.g. \"sda\" (default: all \
             disks)."
            ),
            &IOFSSTAT,
        ),
        diagnosis_tool::<IodiagnoseParams>(
            "iodiagnose",
            concat!(
                activation_note!(),
                node_mode!(),
                "One-click IO diagnosis: high IO latency (OS side or storage backend), abnormal IO traffic \
             (which process), high iowait (root cause along the IO path). timeout = seconds to diagnose \
             (default \"30\", at most 300; below 30 is not recommended)."
            ),
            &IODIAGNOSE,
        ),
        diagnosis_tool::<PacketdropParams>(
            "packetdrop",
            concat!(
                activation_note!(),
                node_mode!(),
                "Packet-drop diagnosis inside the kernel network stack: finds drops caused by misconfiguration, \
             iptables rules or drivers.",
                history_mode!()
            ),
            &PACKETDROP,
        ),
        diagnosis_tool::<JitterParams>(
            "netjitter",
            concat!(
                activation_note!(),
                node_mode!(),
                "Network jitter diagnosis: slow application receive, slow softirq processing, slow qdisc. \
             duration = seconds to observe (default 20); threshold = jitter threshold in ms (default 10). \
             Both are only sent when given; duration is at most 60.",
                history_mode!()
            ),
            &NETJITTER,
        ),
        diagnosis_tool::<JitterParams>(
            "delay",
            concat!(
                activation_note!(),
                node_mode!(),
                "Scheduling jitter diagnosis: finds CPUs that did not switch tasks for a long time, starving user \
             processes (for example during memory reclaim). duration = seconds to observe (default 20); \
             threshold = ms (default 20); duration is at most 60.",
                history_mode!()
            ),
            &DELAY,
        ),
        diagnosis_tool::<InstanceParams>(
            "loadtask",
            concat!(
                activation_note!(),
                node_mode!(),
                "System load diagnosis: explains an abnormal load1 and which tasks contribute to it, with details."
            ),
            &LOADTASK,
        ),
        diagnosis_tool::<InstanceParams>(
            "vmcore",
            concat!(
                activation_note!(),
                node_mode!(),
                "Crash diagnosis of an instance: analyses the kernel panic core dump together with dmesg to find \
             why the OS crashed."
            ),
            &VMCORE,
        ),
        diagnosis_tool::<InstanceParams>(
            "diskanalysis",
            concat!(
                activation_note!(),
                node_mode!(),
                "Disk usage analysis: what fills the disks of the instance."
            ),
            &DISKANALYSIS,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn params(spec: &Spec, args: &Map<String, Value>) -> Map<String, Value> {
        diagnosis_params(spec, args, crate::config::DEFAULT_SOURCE_MARKER)
    }

    #[test]
    fn the_marker_key_is_configurable() {
        let p = diagnosis_params(
            &LOADTASK,
            &args(json!({"region": "r", "instance": "i"})),
            "source",
        );
        assert_eq!(p["source"], "mcp");
        assert!(!p.contains_key("__sysom_diagnosis_source"));
    }

    #[test]
    fn limits_name_the_argument_and_the_limit() {
        let check = |spec: &Spec, v: Value| check_args(spec, &args(v));
        assert!(check(&IOFSSTAT, json!({"channel": "ecs", "timeout": "30"})).is_ok());
        assert!(check(&IOFSSTAT, json!({"channel": "eflo", "timeout": ""})).is_ok());
        let e = check(&IOFSSTAT, json!({"channel": "ecs", "timeout": "31"})).unwrap_err();
        assert!(e.contains("`timeout`") && e.contains("at most 30"), "{e}");
        let e = check(&IODIAGNOSE, json!({"timeout": "301"})).unwrap_err();
        assert!(e.contains("at most 300"), "{e}");
        assert!(check(&IODIAGNOSE, json!({"timeout": "300"})).is_ok());
        for spec in [&DELAY, &NETJITTER] {
            let e = check(spec, json!({"duration": "61"})).unwrap_err();
            assert!(e.contains("`duration`") && e.contains("at most 60"), "{e}");
            assert!(check(spec, json!({"duration": "60"})).is_ok());
        }
        let e = check(&IOFSSTAT, json!({"timeout": "soon"})).unwrap_err();
        assert!(e.contains("must be a number"), "{e}");
        // Services without limits take any value, as before.
        assert!(check(&JAVAMEM, json!({"duration": "600"})).is_ok());
        let e = check(&LOADTASK, json!({"channel": "vm"})).unwrap_err();
        assert!(e.contains("`channel`") && e.contains("eflo"), "{e}");
    }

    #[test]
    fn history_mode_is_sent_in_each_services_encoding() {
        let a =
            args(json!({"region": "r", "instance": "i", "is_history": true, "anomaly_start": "1"}));
        assert_eq!(params(&DELAY, &a)["is_history"], 1);
        assert_eq!(params(&PACKETDROP, &a)["is_history"], true);
        assert_eq!(params(&NETJITTER, &a)["anomaly_start"], "1");
    }

    #[test]
    fn params_drop_nulls_and_routing_fields() {
        let p = params(
            &MEMGRAPH,
            &args(
                json!({"uid": "1", "region": "cn-hangzhou", "channel": "ecs", "instance": "i-1", "pod": null}),
            ),
        );
        assert_eq!(
            Value::Object(p).to_string(),
            r#"{"region":"cn-hangzhou","_hide":"0","instance":"i-1","__sysom_diagnosis_source":"mcp"}"#
        );
    }

    #[test]
    fn javamem_renames_pid_and_defaults_duration() {
        let p = params(
            &JAVAMEM,
            &args(
                json!({"uid": "1", "region": "r", "channel": "ecs", "instance": "i", "pid": "42", "duration": ""}),
            ),
        );
        assert_eq!(p["Pid"], "42");
        assert!(!p.contains_key("pid"));
        assert_eq!(p["duration"], "0");
    }

    #[test]
    fn io_defaults_apply_only_when_missing() {
        let p = params(&IOFSSTAT, &args(json!({"region": "r", "instance": "i"})));
        assert_eq!(p["timeout"], "15");
        let p = params(
            &IODIAGNOSE,
            &args(json!({"region": "r", "instance": "i", "timeout": "60"})),
        );
        assert_eq!(p["timeout"], "60");
    }

    #[test]
    fn jitter_sends_threshold_only_when_given() {
        let p = params(
            &NETJITTER,
            &args(json!({"region": "r", "instance": "i", "duration": null})),
        );
        assert!(!p.contains_key("duration") && !p.contains_key("threshold"));
    }

    #[test]
    fn result_string_is_parsed_or_kept_raw() {
        let ok = finished(
            json!({"status": "Success", "result": "{\"summary\":\"ok\"}"}),
            "T1",
        );
        assert_eq!(ok.code, "Success");
        assert_eq!(ok.result["summary"], "ok");
        let bad = finished(json!({"status": "Success", "result": "not json"}), "T1");
        assert_eq!(bad.code, "ResultParseFailed");
        assert_eq!(bad.result["raw"], "not json");
    }
}
