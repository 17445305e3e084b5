//! The SysOM OpenAPI (2023-12-30) operations the tools call: action, method and path.
//! All are ROA style: GET parameters go to the query string, POST parameters to a JSON body.

use reqwest::Method;

/// One OpenAPI operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub action: &'static str,
    pub method: OpMethod,
    pub path: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpMethod {
    Get,
    Post,
}

impl OpMethod {
    pub fn as_reqwest(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
        }
    }
}

const fn get(action: &'static str, path: &'static str) -> Operation {
    Operation {
        action,
        method: OpMethod::Get,
        path,
    }
}

const fn post(action: &'static str, path: &'static str) -> Operation {
    Operation {
        action,
        method: OpMethod::Post,
        path,
    }
}

pub const API_VERSION: &str = "2023-12-30";

pub const INVOKE_DIAGNOSIS: Operation = post(
    "InvokeDiagnosis",
    "/api/v1/openapi/diagnosis/invoke_diagnosis",
);
pub const GET_DIAGNOSIS_RESULT: Operation = get(
    "GetDiagnosisResult",
    "/api/v1/openapi/diagnosis/get_diagnosis_results",
);
pub const LIST_ALL_INSTANCES: Operation =
    get("ListAllInstances", "/api/v1/am/instance/listAllInstances");
pub const LIST_INSTANCES: Operation = get("ListInstances", "/api/v1/am/instance/list_instances");
pub const LIST_CLUSTERS: Operation = get("ListClusters", "/api/v1/am/cluster/list_clusters");
pub const LIST_PODS_OF_INSTANCE: Operation = get(
    "ListPodsOfInstance",
    "/api/v1/am/instance/list_pod_of_instance",
);
pub const INITIAL_SYSOM: Operation = post("InitialSysom", "/api/v1/openapi/initial");
pub const CREATE_VMCORE_DIAGNOSIS_TASK: Operation = post(
    "CreateVmcoreDiagnosisTask",
    "/api/v1/crashAgent/diagnosis/createDiagnosisTask",
);
pub const GET_VMCORE_DIAGNOSIS_TASK: Operation = get(
    "GetVmcoreDiagnosisTask",
    "/api/v1/crashAgent/diagnosis/queryTask",
);
pub const LIST_VMCORE_DIAGNOSIS_TASK: Operation = get(
    "ListVmcoreDiagnosisTask",
    "/api/v1/crashAgent/diagnosis/queryTaskList",
);
