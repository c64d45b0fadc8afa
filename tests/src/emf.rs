//! A checker for CloudWatch Embedded Metric Format documents, written from the specification
//! (AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification), not
//! from the code that produces them.

use serde_json::Value;

/// Units CloudWatch accepts (MetricDatum `Unit`).
pub const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Whether a log line is meant as an EMF document (has the `_aws` member).
pub fn is_emf(line: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .ok()
        .is_some_and(|v| v.get("_aws").is_some())
}

/// Checks one log line against the specification; the error says which rule it breaks.
pub fn validate(line: &str) -> Result<Value, String> {
    if line.len() > 1024 * 1024 {
        return Err("document over the 1 MB log event limit".into());
    }
    // The whole line must be one JSON object, nothing before or after it.
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let root = doc.as_object().ok_or("root is not an object")?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .ok_or("`_aws` is missing or not an object")?;
    let ts = aws.get("Timestamp").ok_or("`_aws.Timestamp` is missing")?;
    let ts = ts
        .as_i64()
        .ok_or("`_aws.Timestamp` is not an integer number of ms")?;
    // Milliseconds since the epoch: after 2001-09-09 (1e12 ms) rules out seconds.
    if ts < 1_000_000_000_000 {
        return Err(format!("`_aws.Timestamp` {ts} is not in milliseconds"));
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("`_aws.CloudWatchMetrics` is missing or not an array")?;
    if directives.is_empty() {
        return Err("`_aws.CloudWatchMetrics` is empty".into());
    }
    for (i, d) in directives.iter().enumerate() {
        let at = format!("CloudWatchMetrics[{i}]");
        let d = d.as_object().ok_or(format!("{at} is not an object"))?;
        let namespace = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or(format!("{at}.Namespace is missing or not a string"))?;
        if namespace.is_empty() || namespace.len() > 255 {
            return Err(format!("{at}.Namespace must be 1-255 characters"));
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or(format!("{at}.Dimensions is missing or not an array"))?;
        for (j, set) in sets.iter().enumerate() {
            let set = set
                .as_array()
                .ok_or(format!("{at}.Dimensions[{j}] is not an array"))?;
            if set.len() > 30 {
                return Err(format!("{at}.Dimensions[{j}] has more than 30 keys"));
            }
            for key in set {
                let key = key
                    .as_str()
                    .ok_or(format!("{at}.Dimensions[{j}] holds a non-string"))?;
                match root.get(key) {
                    Some(Value::String(v)) if !v.is_empty() && v.len() <= 1024 => {}
                    Some(_) => {
                        return Err(format!(
                            "dimension `{key}` must be a non-empty string of ≤ 1024 characters"
                        ));
                    }
                    None => return Err(format!("dimension `{key}` has no top-level member")),
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or(format!("{at}.Metrics is missing or not an array"))?;
        if metrics.len() > 100 {
            return Err(format!("{at}.Metrics has {} > 100 metrics", metrics.len()));
        }
        for (k, m) in metrics.iter().enumerate() {
            let m = m
                .as_object()
                .ok_or(format!("{at}.Metrics[{k}] is not an object"))?;
            let name = m
                .get("Name")
                .and_then(Value::as_str)
                .ok_or(format!("{at}.Metrics[{k}].Name is missing or not a string"))?;
            if name.is_empty() || name.len() > 255 {
                return Err(format!("metric name `{name}` must be 1-255 characters"));
            }
            if let Some(unit) = m.get("Unit") {
                let unit = unit
                    .as_str()
                    .ok_or(format!("unit of `{name}` is not a string"))?;
                if !UNITS.contains(&unit) {
                    return Err(format!(
                        "unit `{unit}` of `{name}` is not a CloudWatch unit"
                    ));
                }
            }
            if let Some(res) = m.get("StorageResolution")
                && res != 1
                && res != 60
            {
                return Err(format!("StorageResolution of `{name}` must be 1 or 60"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) => {
                    if values.is_empty() || values.len() > 100 {
                        return Err(format!("`{name}` must hold 1-100 values"));
                    }
                    if !values.iter().all(Value::is_number) {
                        return Err(format!("`{name}` holds a non-number"));
                    }
                }
                Some(_) => return Err(format!("metric `{name}` is not a number or array")),
                None => return Err(format!("metric `{name}` has no top-level member")),
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["Function"]],"Metrics":[{"Name":"A","Unit":"Count"},{"Name":"B","Unit":"Milliseconds"}]}]},"Function":"f","A":1,"B":[1,2.5]}"#;

    #[test]
    fn accepts_a_valid_document_and_names_each_broken_rule() {
        validate(GOOD).unwrap();
        let broken = [
            (GOOD.replace("1700000000000", "1700000000"), "milliseconds"),
            (
                GOOD.replace(r#""Function":"f","#, ""),
                "dimension `Function`",
            ),
            (
                GOOD.replace(r#""Function":"f""#, r#""Function":3"#),
                "dimension",
            ),
            (GOOD.replace(r#""A":1,"#, ""), "metric `A` has no"),
            (GOOD.replace(r#""A":1"#, r#""A":"1""#), "metric `A` is not"),
            (
                GOOD.replace(r#""Unit":"Count""#, r#""Unit":"Things""#),
                "unit",
            ),
            (GOOD.replace(r#""Namespace":"N","#, ""), "Namespace"),
            (GOOD.replace("[1,2.5]", "[1,\"x\"]"), "non-number"),
            (format!("x{GOOD}"), "not JSON"),
        ];
        for (doc, expected) in broken {
            let err = validate(&doc).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let doc = GOOD.replace("[1,2.5]", &format!("[{}]", many.join(",")));
        assert!(validate(&doc).unwrap_err().contains("1-100 values"));
    }
}
