//! `sysom-mcp check`: the deployment guide's troubleshooting section, automated. Validates the
//! configuration, shows where each setting came from, makes one harmless signed call
//! (`InitialSysom` with `check_only`) and reports socket/unit state. Exit 0 or 1.

use std::{process::Command, time::Duration};

use clap::{ArgMatches, parser::ValueSource};

use crate::{
    auth::tokens::Tokens,
    config::{self, ServerArgs},
    credentials::CredentialError,
    exit::StartError,
    tools::{Services, envelope},
    upstream::{UpstreamError, ops},
};

/// Where a setting's value came from: a flag, the environment, the file, or the default.
/// clap records the first two (global flags are found in the subcommand's matches too).
fn source(matches: &ArgMatches, id: &str, in_file: bool) -> &'static str {
    let recorded = matches.value_source(id).or_else(|| {
        let (_, sub) = matches.subcommand()?;
        sub.try_get_raw(id).ok()?; // not defined there (not a global flag): nothing recorded
        sub.value_source(id)
    });
    match recorded {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        _ if in_file => "config file",
        _ => "default",
    }
}

/// What to do about a failed signed call, by what failed.
fn upstream_hint(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::Timeout(_) | UpstreamError::Deadline(_) => {
            "check DNS, outbound HTTPS (firewall/proxy) and the endpoint URL"
        }
        UpstreamError::Credentials(CredentialError::Fetch(_)) => {
            "the STS or ECS metadata service did not hand out credentials: check the role ARN or \
             instance RAM role and that the service is reachable"
        }
        UpstreamError::Credentials(CredentialError::Missing { .. }) => {
            "set the variables in /etc/default/sysom-mcp (or /etc/sysconfig/sysom-mcp) or the \
             credential files"
        }
        UpstreamError::Api { code, .. }
            if code == "SignatureDoesNotMatch"
                || code == "IncompleteSignature"
                || code.starts_with("InvalidAccessKeyId")
                || code.starts_with("InvalidSecurityToken") =>
        {
            "check the AccessKey ID/secret pair (and the security token for sts)"
        }
        UpstreamError::Redirected { .. } | UpstreamError::Malformed { .. } => {
            "the endpoint is not the SysOM OpenAPI (a proxy or captive portal?): check the endpoint URL"
        }
        _ => {
            "see the gateway's message above; permission errors need SysOM activated and the RAM \
             policy AliyunSysomFullAccess"
        }
    }
}

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: &str) {
        println!("  ok    {what}");
    }
    /// Works, but should be changed; not counted as a problem.
    fn warn(&self, what: &str, fix: &str) {
        println!("  WARN  {what}\n        → {fix}");
    }
    fn problem(&mut self, what: &str, fix: &str) {
        self.problems += 1;
        println!("  FAIL  {what}\n        → {fix}");
    }
}

pub(crate) fn run(args: &ServerArgs, matches: &ArgMatches) -> Result<(), StartError> {
    let mut r = Report { problems: 0 };
    println!("sysom-mcp {} check", env!("CARGO_PKG_VERSION"));
    println!("configuration:");
    let (path, file) = match config::read_file(args) {
        Ok(x) => x,
        Err(e) => {
            r.problem(
                &e.to_string(),
                "fix the file (unknown keys and bad values are errors) or pass --config",
            );
            return Err(StartError::CheckFailed(r.problems));
        }
    };
    let in_file = (
        file.server.host.is_some(),
        file.server.port.is_some(),
        file.endpoint.is_some(),
        file.auth.token_files.is_some(),
    );
    let config = match config::resolve(args, file, path, &config::process_env) {
        Ok(c) => c,
        Err(e) => {
            r.problem(&e.to_string(), "correct the value named above");
            return Err(StartError::CheckFailed(r.problems));
        }
    };
    r.ok(&format!(
        "config file: {}",
        config::describe_path(&config.config_path)
    ));
    println!(
        "        host     = {} ({})",
        config.server.host,
        source(matches, "host", in_file.0)
    );
    println!(
        "        port     = {} ({})",
        config.server.port,
        source(matches, "port", in_file.1)
    );
    println!("        path     = {}", config.server.path);
    println!(
        "        endpoint = {} ({})",
        config.endpoint,
        source(matches, "endpoint", in_file.2)
    );

    println!("authentication:");
    if let Some(oauth) = &config.auth.oauth {
        r.ok(&format!(
            "OAuth access tokens from {} for audience {}",
            oauth.issuer, oauth.resource
        ));
    }
    match Tokens::from_config(&config) {
        Ok(t) if !t.is_empty() => {
            r.ok(&format!(
                "{} bearer token(s) ({})",
                t.len(),
                source(matches, "token_file", in_file.3)
            ));
            if t.plain_count() > 0 {
                r.warn(
                    &format!(
                        "{} plain token(s) of the old format: the file holds the token itself, \
                         and it has every scope",
                        t.plain_count()
                    ),
                    "replace each with `sysom-mcp token new NAME --scope read,diagnose` (only \
                     its SHA-256 is stored) and delete the plain line",
                );
            }
        }
        Ok(_) if config.auth.oauth.is_some() => {}
        Ok(_) if config.auth.allow_unauthenticated => r.ok("no tokens; unauthenticated access explicitly allowed"),
        Ok(_) if config.server.is_loopback() => {
            r.ok("no tokens; fine while listening on loopback only (socket activation on 0.0.0.0/[::] needs one)")
        }
        Ok(_) => r.problem(
            "no bearer token configured but the server listens beyond loopback",
            "write a token to /etc/sysom-mcp/credentials/mcp-tokens (mode 0600) or pass --token-file",
        ),
        Err(e) => r.problem(&e, "fix the token file path or permissions"),
    }

    println!("task handles:");
    let services = match Services::from_config(&config, None) {
        Ok(services) => {
            r.ok(&format!(
                "sealed with {}",
                services.task_key_origin.describe()
            ));
            services
        }
        Err(e) => {
            r.problem(
                &e,
                "put one key of at least 32 characters per line in /etc/sysom-mcp/credentials/task-keys \
                 (newest first), or remove the file",
            );
            return Err(StartError::CheckFailed(r.problems));
        }
    };
    println!("credentials ({}):", config.credentials.kind.as_str());
    let provider = services.upstream.credentials();
    for origin in &provider.origins {
        r.ok(&format!("{} from {}", origin.name, origin.source));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if !provider.is_configured() {
        let err = runtime
            .block_on(provider.get(&reqwest::Client::new()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        r.problem(&err, "set the variables in /etc/default/sysom-mcp (or /etc/sysconfig/sysom-mcp) or the credential files");
    } else {
        println!("endpoint:");
        let body = serde_json::json!({"check_only": true, "source": "mcp"});
        let call = services
            .upstream
            .call(&ops::INITIAL_SYSOM, &[], Some(&body));
        match runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), call).await })
        {
            Ok(Ok(v)) => match envelope::business_failure(&v) {
                None => {
                    let active =
                        v.pointer("/data/role_exist").and_then(|x| x.as_bool()) == Some(true);
                    r.ok("signed call InitialSysom(check_only) succeeded: credentials and endpoint work");
                    if !active {
                        r.problem(
                            "SysOM is not activated for this account",
                            "activate it (free) at https://alinux.console.aliyun.com or through the initial_sysom tool",
                        );
                    }
                }
                Some((code, msg)) => r.problem(
                    &format!("SysOM answered {code}: {msg}"),
                    "see the message above",
                ),
            },
            Ok(Err(e)) => r.problem(&e.to_string(), upstream_hint(&e)),
            Err(_) => r.problem(
                "the endpoint did not answer within 30 s",
                "check network reachability of the endpoint",
            ),
        }
    }

    println!("systemd:");
    for unit in ["sysom-mcp.socket", "sysom-mcp.service"] {
        let state = |verb: &str| {
            Command::new("systemctl")
                .args([verb, unit])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        match (state("is-enabled"), state("is-active")) {
            (Some(enabled), Some(active)) if !enabled.is_empty() => {
                println!("        {unit}: {enabled}, {active}");
            }
            _ => println!("        {unit}: systemctl not available or unit not installed"),
        }
    }
    if std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], config.server.port)),
        Duration::from_secs(1),
    )
    .is_ok()
    {
        r.ok(&format!(
            "something listens on 127.0.0.1:{}",
            config.server.port
        ));
    } else {
        println!(
            "        nothing listens on 127.0.0.1:{} (start it: systemctl enable --now sysom-mcp.socket)",
            config.server.port
        );
    }

    if r.problems == 0 {
        println!("all checks passed");
        Ok(())
    } else {
        println!("{} problem(s) found", r.problems);
        Err(StartError::CheckFailed(r.problems))
    }
}
