//! Settings from AWS Secrets Manager: each function's `SECRETS_ARN` names one or more secrets
//! (comma-separated) whose `SecretString` is a JSON object of setting name → value. Those
//! values win over the environment, so credentials never sit in plain environment variables
//! or template parameters. Read once per cold start.

use std::collections::HashMap;

/// The environment variable naming the secrets.
pub const SECRETS_ARN: &str = "SECRETS_ARN";

/// The merged settings of every secret in `SECRETS_ARN` (empty when it is unset).
#[derive(Default)]
pub struct SecretSettings {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for SecretSettings {
    // Names only: the values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("SecretSettings")
            .field("names", &names)
            .finish()
    }
}

impl SecretSettings {
    /// Reads every secret `SECRETS_ARN` names. A setting present in two secrets is refused:
    /// which one wins would depend on the order of the list.
    pub async fn load(
        aws: &aws_config::SdkConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let arns: Vec<String> = env(SECRETS_ARN)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if arns.is_empty() {
            return Ok(Self::default());
        }
        let client = aws_sdk_secretsmanager::Client::new(aws);
        let mut out = Self::default();
        for arn in arns {
            let map = read_secret(&client, &arn).await?;
            out.merge(&arn, map)?;
        }
        Ok(out)
    }

    /// Adds one secret's JSON object (strings and numbers; other values are refused).
    pub fn merge(
        &mut self,
        arn: &str,
        map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        for (name, value) in map {
            let value = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                // Left empty in the template until the operator fills it in: not set.
                serde_json::Value::Null => continue,
                _ => {
                    return Err(format!("secret {arn}: {name} must be a string or a number"));
                }
            };
            if self.values.insert(name.clone(), value).is_some() {
                return Err(format!(
                    "{name} is set in more than one secret of {SECRETS_ARN}; keep it in one"
                ));
            }
        }
        Ok(())
    }

    /// The secret's value (a non-empty one), else the environment's.
    pub fn lookup(&self, env: impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
        self.values
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| env(name))
    }
}

/// Reads a secret whose `SecretString` is a JSON object.
pub async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading secret {arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let text = output
        .secret_string()
        .ok_or_else(|| format!("secret {arn} has no SecretString"))?;
    serde_json::from_str(text).map_err(|e| format!("secret {arn} is not a JSON object: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn secret_values_win_over_the_environment_and_empty_ones_do_not() {
        let mut s = SecretSettings::default();
        s.merge(
            "a",
            object(r#"{"AKENEO_PASSWORD":"p","MAX_BODY_BYTES":10,"BYNDER_TOKEN":""}"#),
        )
        .unwrap();
        let env = |name: &str| Some(format!("env-{name}"));
        assert_eq!(s.lookup(env, "AKENEO_PASSWORD").unwrap(), "p");
        assert_eq!(s.lookup(env, "MAX_BODY_BYTES").unwrap(), "10");
        assert_eq!(s.lookup(env, "BYNDER_TOKEN").unwrap(), "env-BYNDER_TOKEN");
        assert_eq!(s.lookup(env, "QUEUE_URL").unwrap(), "env-QUEUE_URL");
        assert_eq!(s.lookup(|_| None, "QUEUE_URL"), None);
    }

    #[test]
    fn a_setting_in_two_secrets_or_of_the_wrong_type_is_refused() {
        let mut s = SecretSettings::default();
        s.merge("a", object(r#"{"AKENEO_PASSWORD":"p"}"#)).unwrap();
        let err = s
            .merge("b", object(r#"{"AKENEO_PASSWORD":"q"}"#))
            .unwrap_err();
        assert!(
            err.contains("AKENEO_PASSWORD") && err.contains("more than one"),
            "{err}"
        );
        let err = s.merge("c", object(r#"{"X":[1]}"#)).unwrap_err();
        assert!(err.contains("secret c") && err.contains('X'), "{err}");
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "Debug shows names only"
        );
    }
}
