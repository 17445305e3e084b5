//! Crash-agent tools: create vmcore or dmesg diagnosis tasks, query one, list recent ones.
//! Unlike the original, the create tools also return `code` and `message`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Effect, Services, ToolDef,
    diagnosis::activation_note,
    envelope::{BasicResult, fetch},
    tool,
};
use crate::auth::Scope;
use crate::upstream::ops;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct VmcoreTaskParams {
    /// Download URL of the vmcore file
    vmcore_url: String,
    /// Download URL of the kernel debuginfo package (optional; not needed for Alinux/CentOS kernels)
    #[serde(default)]
    debuginfo_url: Option<String>,
    /// Download URL of the debuginfo-common package (optional)
    #[serde(default)]
    debuginfo_common_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct DmesgTaskParams {
    /// Download URL of the dmesg log file
    dmesg_url: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct QueryTaskParams {
    /// Crash diagnosis task ID
    task_id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct HistoryParams {
    /// How many days back to list tasks, 1 to 30
    #[schemars(range(min = 1, max = 30))]
    days: i64,
}

/// Builds the CreateVmcoreDiagnosisTask body: camelCase wire names, nulls left out.
fn create_body(task_type: &str, fields: &[(&str, &Option<String>)]) -> Value {
    let mut body = Map::new();
    body.insert("taskType".into(), task_type.into());
    for (name, value) in fields {
        if let Some(v) = value {
            body.insert((*name).into(), v.clone().into());
        }
    }
    Value::Object(body)
}

/// Creates a crash diagnosis task from a body made by [`create_body`].
async fn create_task(services: &Services, body: &Value) -> BasicResult {
    fetch(
        &services.upstream,
        &ops::CREATE_VMCORE_DIAGNOSIS_TASK,
        &[],
        Some(body),
    )
    .await
    .basic()
}

pub(super) fn tools() -> Vec<ToolDef> {
    vec![
        tool::<VmcoreTaskParams, BasicResult, _, _>(
            "create_vmcore_diagnosis_task",
            concat!(
                activation_note!(),
                "Create a kernel-crash diagnosis task from a VMCORE file: SysOM analyses the dump with debug \
                 symbols, locates the root cause and searches community fix patches. debuginfo is not needed \
                 for Alibaba Cloud Linux/CentOS kernels but is required for other distributions. The analysis \
                 takes 5 to 30 minutes: keep data.taskId and call query_diagnosis_task later."
            ),
            ops::CREATE_VMCORE_DIAGNOSIS_TASK.action,
            Effect::Creates,
            Scope::Admin,
            |s, p, _ctx| async move {
                let body = create_body(
                    "vmcore",
                    &[
                        ("vmcoreUrl", &Some(p.vmcore_url)),
                        ("debuginfoUrl", &p.debuginfo_url),
                        ("debuginfoCommonUrl", &p.debuginfo_common_url),
                    ],
                );
                create_task(&s, &body).await
            },
        ),
        tool::<DmesgTaskParams, BasicResult, _, _>(
            "create_dmesg_diagnosis_task",
            concat!(
                activation_note!(),
                "Create a diagnosis task from a kept dmesg log, to find why a system went down (hardware \
                 causes included). Keep data.taskId and call query_diagnosis_task later."
            ),
            ops::CREATE_VMCORE_DIAGNOSIS_TASK.action,
            Effect::Creates,
            Scope::Admin,
            |s, p, _ctx| async move {
                let body = create_body("dmesg", &[("dmesgUrl", &Some(p.dmesg_url))]);
                create_task(&s, &body).await
            },
        ),
        tool::<QueryTaskParams, BasicResult, _, _>(
            "query_diagnosis_task",
            concat!(
                activation_note!(),
                "Get the status and result of a crash diagnosis task (vmcore or dmesg). data.taskStatus is \
                 created, queued, running, success or error; while it is not finished, ask again later. \
                 data.diagnoseResult holds the analysis, data.urls the inputs."
            ),
            ops::GET_VMCORE_DIAGNOSIS_TASK.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move {
                let query = [("taskId".to_string(), p.task_id)];
                fetch(&s.upstream, &ops::GET_VMCORE_DIAGNOSIS_TASK, &query, None)
                    .await
                    .basic()
            },
        ),
        tool::<HistoryParams, BasicResult, _, _>(
            "list_history_tasks",
            concat!(
                activation_note!(),
                "List the crash diagnosis tasks (vmcore and dmesg) created in the last `days` days (1 to 30), \
                 with their IDs, types, status, creation time and error message."
            ),
            ops::LIST_VMCORE_DIAGNOSIS_TASK.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move {
                let query = [("days".to_string(), p.days.to_string())];
                fetch(&s.upstream, &ops::LIST_VMCORE_DIAGNOSIS_TASK, &query, None)
                    .await
                    .basic()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_leaves_out_missing_urls() {
        let b = create_body(
            "vmcore",
            &[("vmcoreUrl", &Some("u".into())), ("debuginfoUrl", &None)],
        );
        assert_eq!(b.to_string(), r#"{"taskType":"vmcore","vmcoreUrl":"u"}"#);
    }
}
