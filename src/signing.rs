//! ACS3-HMAC-SHA256 request signing (the Alibaba Cloud "V3" signature).
//!
//! Pure functions only: the upstream client decides which headers to send, this module turns them
//! into the canonical request, the string to sign and the `Authorization` header. Query values are
//! encoded with [`rfc3986_encode`], and the client sends exactly that encoding on the wire so the
//! gateway hashes the same bytes we did.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The algorithm name, first line of the string to sign and prefix of `Authorization`.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Characters left as they are by RFC 3986: `A-Z a-z 0-9 - _ . ~`. Everything else, space
/// included, is percent-encoded (space becomes `%20`, never `+`).
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query key or value as the signature requires.
pub fn rfc3986_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986_RESERVED).to_string()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Builds the canonical query string: keys sorted, `key=value` pairs encoded, joined by `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (rfc3986_encode(k), rfc3986_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// One request as the signer sees it. `headers` are the headers to sign (names in any case).
pub struct SignInput<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub hashed_payload: &'a str,
}

/// The intermediate and final values of one signature, kept apart so tests can check each step.
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub signed_headers: String,
    pub string_to_sign: String,
    pub signature: String,
}

/// Signs `input` with `secret`. The secret is only used as the HMAC key and never stored.
pub fn sign(input: &SignInput<'_>, secret: &str) -> Signature {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let path = if input.path.is_empty() {
        "/"
    } else {
        input.path
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        path,
        canonical_query(input.query),
        canonical_headers,
        signed_headers,
        input.hashed_payload
    );
    let string_to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any size");
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Signature {
        canonical_request,
        signed_headers,
        string_to_sign,
        signature,
    }
}

/// The `Authorization` header value for a signature made with `access_key_id`.
pub fn authorization(access_key_id: &str, sig: &Signature) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={}",
        sig.signed_headers, sig.signature
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn official(date: &str, nonce: &str) -> Signature {
        let query = vec![
            (
                "ImageId".to_string(),
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd".to_string(),
            ),
            ("RegionId".to_string(), "cn-shanghai".to_string()),
        ];
        let headers = vec![
            (
                "host".to_string(),
                "ecs.cn-shanghai.aliyuncs.com".to_string(),
            ),
            ("x-acs-action".to_string(), "RunInstances".to_string()),
            ("x-acs-content-sha256".to_string(), EMPTY_SHA.to_string()),
            ("x-acs-date".to_string(), date.to_string()),
            ("x-acs-signature-nonce".to_string(), nonce.to_string()),
            ("x-acs-version".to_string(), "2014-05-26".to_string()),
        ];
        sign(
            &SignInput {
                method: "POST",
                path: "/",
                query: &query,
                headers: &headers,
                hashed_payload: EMPTY_SHA,
            },
            "YourAccessKeySecret",
        )
    }

    #[test]
    fn official_vector_1() {
        let sig = official("2023-10-26T10:22:32Z", "3156853299f313e23d1673dc12e1703d");
        let expected_canonical = "POST\n/\n\
            ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
            host:ecs.cn-shanghai.aliyuncs.com\n\
            x-acs-action:RunInstances\n\
            x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
            x-acs-date:2023-10-26T10:22:32Z\n\
            x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
            x-acs-version:2014-05-26\n\n\
            host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sig.canonical_request, expected_canonical);
        assert_eq!(
            sig.string_to_sign,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            sig.signature,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert_eq!(
            authorization("YourAccessKeyId", &sig),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn official_vector_2() {
        let sig = official("2023-10-26T09:01:01Z", "d410180a5abf7fe235dd9b74aca91fc0");
        assert_eq!(
            sig.signature,
            "e521358f7776c97df52e6b2891a8bc73026794a071b50c3323388c4e0df64804"
        );
    }

    #[test]
    fn rfc3986_encoding_of_query_values() {
        assert_eq!(rfc3986_encode("a b"), "a%20b");
        assert_eq!(rfc3986_encode("a*b"), "a%2Ab");
        assert_eq!(rfc3986_encode("a~b-c_d.e"), "a~b-c_d.e");
        assert_eq!(rfc3986_encode("a+b/c=d&e"), "a%2Bb%2Fc%3Dd%26e");
        assert_eq!(rfc3986_encode("杭州"), "%E6%9D%AD%E5%B7%9E");
        assert_eq!(
            rfc3986_encode(r#"[{"infoType":"ip"}]"#),
            "%5B%7B%22infoType%22%3A%22ip%22%7D%5D"
        );
    }

    #[test]
    fn canonical_query_sorts_by_encoded_key() {
        let q = vec![
            ("b".to_string(), "2 3".to_string()),
            ("a".to_string(), "*".to_string()),
        ];
        assert_eq!(canonical_query(&q), "a=%2A&b=2%203");
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn header_names_are_lowercased_and_values_trimmed() {
        let headers = vec![
            ("X-Acs-Action".to_string(), "  Foo ".to_string()),
            ("Host".to_string(), "h".to_string()),
        ];
        let sig = sign(
            &SignInput {
                method: "GET",
                path: "",
                query: &[],
                headers: &headers,
                hashed_payload: EMPTY_SHA,
            },
            "k",
        );
        assert_eq!(sig.signed_headers, "host;x-acs-action");
        assert!(
            sig.canonical_request
                .starts_with("GET\n/\n\nhost:h\nx-acs-action:Foo\n\n")
        );
    }
}
