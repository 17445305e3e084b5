//! Instance-management tools: list instances, clusters and pods known to SysOM. Each passes its
//! arguments as the query parameters of the matching OpenAPI operation (the original server
//! built its SDK requests wrongly and never reached the API).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Effect, Services, ToolDef,
    diagnosis::activation_note,
    envelope::{AllInstancesResult, InstancesResult, Outcome, PagedResult, fetch, query_from},
    tool,
};
use crate::auth::Scope;
use crate::upstream::{Operation, ops};

fn default_managed_type() -> Option<String> {
    Some("all".into())
}
fn default_instance_type() -> Option<String> {
    Some("ecs".into())
}
fn default_plugin_id() -> Option<String> {
    Some("74a86327-3170-412c-8e67-da3389ec56a9".into())
}
fn default_current_str() -> Option<String> {
    Some("1".into())
}
fn default_page_size_str() -> Option<String> {
    Some("10".into())
}
fn default_max_results() -> Option<i64> {
    Some(100)
}
fn default_current() -> Option<i64> {
    Some(1)
}
fn default_page_size() -> Option<i64> {
    Some(10)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ListAllInstancesParams {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
    /// Region, e.g. cn-hangzhou
    #[serde(default)]
    region: Option<String>,
    /// Management state: managed, unmanaged, all, install, uninstall or upgrade (not sent to the API)
    #[serde(default = "default_managed_type", rename = "managedType")]
    managed_type: Option<String>,
    /// Instance type
    #[serde(default = "default_instance_type", rename = "instanceType")]
    instance_type: Option<String>,
    /// Plugin ID
    #[serde(default = "default_plugin_id", rename = "pluginId")]
    plugin_id: Option<String>,
    /// Filters as a JSON string: an array of {"infoType", "infoValue"[, "infoKey"]}. infoType is one of
    /// instance_id, instance_id_name (IDs or names, comma-separated), ip, instance_tag (needs infoKey),
    /// resource_group_id_name, os_health_score (e.g. "unhealthy"), agent_config_id, cluster_id, gpu (e.g. "nvidia")
    #[serde(default)]
    filters: Option<String>,
    /// Page number from 1 (give together with pageSize)
    #[serde(default = "default_current_str")]
    current: Option<String>,
    /// Page size (give together with current)
    #[serde(default = "default_page_size_str", rename = "pageSize")]
    page_size: Option<String>,
    /// Maximum number of results
    #[serde(default = "default_max_results", rename = "maxResults")]
    max_results: Option<i64>,
    /// Pagination cursor from the previous answer; non-empty means more data
    #[serde(default, rename = "nextToken")]
    next_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ListPodsParams {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
    /// ECS instance ID
    instance: String,
    /// Cluster ID
    #[serde(default)]
    cluster_id: Option<String>,
    /// Page number from 1
    #[serde(default = "default_current")]
    current: Option<i64>,
    /// Page size
    #[serde(default = "default_page_size", rename = "pageSize")]
    page_size: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ListClustersParams {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
    /// Cluster name
    #[serde(default)]
    name: Option<String>,
    /// SysOM cluster ID, for filtering
    #[serde(default)]
    cluster_id: Option<String>,
    /// Cluster type: ACK or CUSTOM
    #[serde(default)]
    cluster_type: Option<String>,
    /// Cluster status: Running, Installing, Uninstalling, Upgrading or Offline
    #[serde(default)]
    cluster_status: Option<String>,
    /// Page number from 1
    #[serde(default = "default_current")]
    current: Option<i64>,
    /// Page size
    #[serde(default = "default_page_size", rename = "pageSize")]
    page_size: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ListInstancesParams {
    /// User ID (Alibaba Cloud account UID)
    uid: String,
    /// Instance ID
    #[serde(default)]
    instance: Option<String>,
    /// Instance status
    #[serde(default)]
    status: Option<String>,
    /// Region, e.g. cn-hangzhou
    #[serde(default)]
    region: Option<String>,
    /// Cluster ID
    #[serde(default)]
    cluster_id: Option<String>,
    /// Page number from 1
    #[serde(default = "default_current")]
    current: Option<i64>,
    /// Page size
    #[serde(default = "default_page_size", rename = "pageSize")]
    page_size: Option<i64>,
}

/// Lists through one GET operation, passing every argument but `uid` as a query parameter.
async fn list(services: &Services, op: &Operation, params: &impl Serialize) -> Outcome {
    fetch(&services.upstream, op, &query_from(params, &["uid"]), None).await
}

pub(super) fn tools() -> Vec<ToolDef> {
    vec![
        tool::<ListAllInstancesParams, AllInstancesResult, _, _>(
            "list_all_instances",
            concat!(
                activation_note!(),
                "List all instances known to SysOM (managed or not), with instance details, filtered by \
                 region, instance type, plugin and filters. filters is a JSON string, e.g. \
                 '[{\"infoType\":\"instance_id\",\"infoValue\":\"i-abc,i-def\"}]' or \
                 '[{\"infoType\":\"instance_tag\",\"infoKey\":\"env\",\"infoValue\":\"prod\"}]' or \
                 '[{\"infoType\":\"os_health_score\",\"infoValue\":\"unhealthy\"}]'. Give current and pageSize \
                 together; a non-empty nextToken in the answer means more data (pass it back)."
            ),
            ops::LIST_ALL_INSTANCES.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move {
                let query = query_from(&p, &["uid", "managedType"]);
                let o = fetch(&s.upstream, &ops::LIST_ALL_INSTANCES, &query, None).await;
                AllInstancesResult {
                    code: o.code.clone(),
                    message: o.message.clone(),
                    data: o.data(),
                    total: o.total(),
                    next_token: o
                        .body
                        .get("nextToken")
                        .and_then(|v| v.as_str())
                        .map(str::to_string),
                    max_results: o
                        .body
                        .get("maxResults")
                        .and_then(|v| v.as_i64())
                        .or(p.max_results),
                    request_id: o.request_id,
                }
            },
        ),
        tool::<ListPodsParams, PagedResult, _, _>(
            "list_pods_of_instance",
            concat!(
                activation_note!(),
                "List the pods running on one instance; each item has pod and namespace. Use it to find the \
                 pod and namespace for a pod-mode diagnosis."
            ),
            ops::LIST_PODS_OF_INSTANCE.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move { list(&s, &ops::LIST_PODS_OF_INSTANCE, &p).await.into() },
        ),
        tool::<ListClustersParams, PagedResult, _, _>(
            "list_clusters",
            concat!(
                activation_note!(),
                "List the clusters registered in SysOM, filtered by name, SysOM cluster ID, type (ACK, CUSTOM) \
                 or status (Running, Installing, Uninstalling, Upgrading, Offline)."
            ),
            ops::LIST_CLUSTERS.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move { list(&s, &ops::LIST_CLUSTERS, &p).await.into() },
        ),
        tool::<ListInstancesParams, InstancesResult, _, _>(
            "list_instances",
            concat!(
                activation_note!(),
                "List instances managed by SysOM with their OS details, filtered by instance ID, status, \
                 region or cluster."
            ),
            ops::LIST_INSTANCES.action,
            Effect::ReadOnly,
            Scope::Read,
            |s, p, _ctx| async move { list(&s, &ops::LIST_INSTANCES, &p).await.into() },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_all_instances_query_skips_uid_and_managed_type() {
        let p: ListAllInstancesParams =
            serde_json::from_value(serde_json::json!({"uid": "u", "region": "cn-hangzhou"}))
                .unwrap();
        let q = query_from(&p, &["uid", "managedType"]);
        let keys: Vec<_> = q.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "region",
                "instanceType",
                "pluginId",
                "current",
                "pageSize",
                "maxResults"
            ]
        );
        assert!(q.contains(&("maxResults".into(), "100".into())));
    }

    #[test]
    fn integers_become_text_and_nulls_vanish() {
        let p: ListClustersParams =
            serde_json::from_value(serde_json::json!({"uid": "u", "current": 2, "name": null}))
                .unwrap();
        let q = query_from(&p, &["uid"]);
        assert_eq!(
            q,
            vec![
                ("current".into(), "2".into()),
                ("pageSize".into(), "10".into())
            ]
        );
    }
}
