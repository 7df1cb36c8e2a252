//! Firecracker's OpenAPI spec as a request validator.
//!
//! Supports the schema subset the spec uses: `$ref` to `#/definitions`, `type`, `enum`,
//! `required`, `properties`, `items`, `minimum`, `maximum`, `additionalProperties`. Unknown
//! properties are violations unless `additionalProperties` allows them, as Firecracker's
//! own parser denies unknown fields.

use serde_json::{Map, Value};

/// The spec file this crate carries (Firecracker v1.16.1).
pub const FIRECRACKER_SPEC: &str = include_str!("../firecracker-api.yaml");

/// Errors loading a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not YAML.
    #[error("spec is not valid yaml")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// YAML, but not the expected shape.
    #[error("spec has no {0}")]
    Shape(&'static str),
}

#[derive(Debug, Clone)]
struct Operation {
    id: String,
    body: Option<(Value, bool)>,
}

#[derive(Debug, Clone)]
struct PathItem {
    template: String,
    ops: Vec<(String, Operation)>,
}

/// A loaded spec.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    version: String,
    paths: Vec<PathItem>,
    definitions: Map<String, Value>,
}

/// A request matched to a spec operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// `operationId`.
    pub operation_id: String,
    /// The path template (`/drives/{drive_id}`).
    pub template: String,
    /// Path parameters, in order.
    pub params: Vec<(String, String)>,
}

fn yaml_to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

fn match_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            params.push((name.to_owned(), (*ps).to_owned()));
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

impl ApiSpec {
    /// The Firecracker spec this crate carries.
    pub fn firecracker() -> Result<Self, SpecError> {
        Self::parse(FIRECRACKER_SPEC)
    }

    /// Parses a Swagger 2.0 document.
    pub fn parse(yaml: &str) -> Result<Self, SpecError> {
        let doc = yaml_to_json(serde_yaml_ng::from_str(yaml)?);
        let version = doc
            .pointer("/info/version")
            .and_then(Value::as_str)
            .ok_or(SpecError::Shape("info.version"))?
            .to_owned();
        let definitions = doc
            .get("definitions")
            .and_then(Value::as_object)
            .ok_or(SpecError::Shape("definitions"))?
            .clone();
        let mut paths = Vec::new();
        for (template, item) in doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or(SpecError::Shape("paths"))?
        {
            let mut ops = Vec::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                let body = op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| p.get("in").and_then(Value::as_str) == Some("body"))
                    .map(|p| {
                        (
                            p.get("schema").cloned().unwrap_or(Value::Null),
                            p.get("required").and_then(Value::as_bool).unwrap_or(false),
                        )
                    });
                ops.push((
                    method.to_ascii_uppercase(),
                    Operation {
                        id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        body,
                    },
                ));
            }
            paths.push(PathItem {
                template: template.clone(),
                ops,
            });
        }
        Ok(ApiSpec {
            version,
            paths,
            definitions,
        })
    }

    /// The spec's `info.version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A definition by name.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// Checks a request; on success, the matched operation. Violations are human-readable.
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Matched, Vec<String>> {
        let path = path.split('?').next().unwrap_or(path);
        let mut found_path = false;
        for item in &self.paths {
            let Some(params) = match_template(&item.template, path) else {
                continue;
            };
            found_path = true;
            let Some((_, op)) = item.ops.iter().find(|(m, _)| m == method) else {
                continue;
            };
            let matched = Matched {
                operation_id: op.id.clone(),
                template: item.template.clone(),
                params,
            };
            let mut errs = Vec::new();
            match (&op.body, body.is_empty()) {
                (Some((_, true)), true) => errs.push("request body is required".to_owned()),
                (None, false) => errs.push(format!("{method} {} takes no body", item.template)),
                (Some((schema, _)), false) => match serde_json::from_slice::<Value>(body) {
                    Ok(v) => self.validate(schema, &v, "body", &mut errs),
                    Err(e) => errs.push(format!("body is not json: {e}")),
                },
                _ => {}
            }
            return if errs.is_empty() {
                Ok(matched)
            } else {
                Err(errs)
            };
        }
        Err(vec![if found_path {
            format!("method {method} not allowed on {path}")
        } else {
            format!("no such path {path}")
        }])
    }

    /// Validates `value` against `schema`, pushing violations (prefixed with `at`).
    pub fn validate(&self, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r
                .strip_prefix("#/definitions/")
                .and_then(|n| self.definitions.get(n))
            {
                Some(def) => self.validate(def, value, at, errs),
                None => errs.push(format!("{at}: unresolvable $ref {r}")),
            }
            return;
        }
        if let Some(ty) = schema.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{at}: expected {ty}, got {value}"));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errs.push(format!(
                "{at}: {value} is not one of {}",
                Value::Array(options.clone())
            ));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errs.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errs.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(items) = schema.get("items")
            && let Some(arr) = value.as_array()
        {
            for (i, v) in arr.iter().enumerate() {
                self.validate(items, v, &format!("{at}[{i}]"), errs);
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !obj.contains_key(req) {
                    errs.push(format!("{at}: missing required field {req}"));
                }
            }
            let extra_ok = schema.get("additionalProperties");
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.validate(s, v, &format!("{at}.{k}"), errs),
                    None => match extra_ok {
                        Some(Value::Bool(true)) => {}
                        Some(s @ Value::Object(_)) => {
                            self.validate(s, v, &format!("{at}.{k}"), errs);
                        }
                        _ if props.is_some() => errs.push(format!("{at}: unknown field {k}")),
                        _ => {}
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(method: &str, path: &str, body: &Value) -> Result<Matched, Vec<String>> {
        let spec = ApiSpec::firecracker().unwrap();
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        spec.validate_request(method, path, &bytes)
    }

    #[test]
    fn test_spec_loads_with_definitions() {
        let spec = ApiSpec::firecracker().unwrap();
        assert_eq!(spec.version(), "1.16.1");
        assert!(spec.definition("MachineConfiguration").is_some());
    }

    #[test]
    fn test_valid_requests_match_operations() {
        let m = check("PUT", "/drives/rootfs", &json!({"drive_id": "rootfs", "path_on_host": "/x", "is_root_device": true, "is_read_only": false})).unwrap();
        assert_eq!(m.operation_id, "putGuestDriveByID");
        assert_eq!(m.params, [("drive_id".to_owned(), "rootfs".to_owned())]);
        check(
            "PUT",
            "/machine-config",
            &json!({"vcpu_count": 2, "mem_size_mib": 1024}),
        )
        .unwrap();
        check("PUT", "/actions", &json!({"action_type": "InstanceStart"})).unwrap();
        check("GET", "/version", &Value::Null).unwrap();
    }

    #[test]
    fn test_invalid_requests_are_named() {
        let e = check(
            "PUT",
            "/machine-config",
            &json!({"vcpu_count": 0, "mem_size_mib": "1G"}),
        )
        .unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("vcpu_count") && m.contains("minimum")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("mem_size_mib") && m.contains("expected integer")),
            "{e:?}"
        );
        let e = check("PUT", "/drives/a", &json!({"drive_id": "a"})).unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("missing required field is_root_device")),
            "{e:?}"
        );
        let e = check("PUT", "/actions", &json!({"action_type": "Reboot"})).unwrap_err();
        assert!(e[0].contains("not one of"), "{e:?}");
        let e = check(
            "PUT",
            "/boot-source",
            &json!({"kernel_image_path": "/k", "kernel_args": "x"}),
        )
        .unwrap_err();
        assert!(e[0].contains("unknown field kernel_args"), "{e:?}");
        let e = check(
            "PUT",
            "/network-interfaces/eth0",
            &json!({"iface_id": "eth0", "host_dev_name": "t", "mtu": 20}),
        )
        .unwrap_err();
        assert!(e[0].contains("minimum"), "{e:?}");
        assert!(check("POST", "/actions", &json!({})).unwrap_err()[0].contains("not allowed"));
        assert!(check("PUT", "/nope", &json!({})).unwrap_err()[0].contains("no such path"));
        assert!(check("PUT", "/logger", &Value::Null).unwrap_err()[0].contains("required"));
    }
}
