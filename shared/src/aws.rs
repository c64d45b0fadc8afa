//! What the AWS adapters share: one answer to "is this failed call worth retrying?", so the SQS
//! and DynamoDB adapters cannot drift apart.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// The SDK's raw HTTP response. Every service crate re-exports this same smithy type, so one
/// classifier serves them all.
pub use aws_sdk_dynamodb::config::http::HttpResponse;

use crate::{ErrorVariant, port_error};

/// What an SDK operation fails with, inside [`SdkError`].
pub trait OperationError: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static {}

impl<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static> OperationError for E {}

/// Whether a call that failed (after the SDK's own retries) may succeed later.
pub fn is_retriable_error<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            is_retriable_service_error(code, service.raw().status().as_u16())
        }
        // The request failed before anything was sent, from the input and the client's
        // configuration alone (a missing required field, a serialisation error): the same call
        // fails the same way again. Missing credentials and endpoint errors are not in this
        // group; the SDK reports them as dispatch failures, which stay retriable.
        SdkError::ConstructionFailure(_) => false,
        // Timeouts, connection failures, unreadable responses.
        _ => true,
    }
}

/// Throttling (any code naming it: SQS `RequestThrottled`, `KmsThrottled`, DynamoDB
/// `ThrottlingException`), DynamoDB's other capacity and contention codes, and any 5xx.
pub fn is_retriable_service_error(code: &str, status: u16) -> bool {
    const RETRIABLE: [&str; 5] = [
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "TransactionConflictException",
        "LimitExceededException",
    ];
    code.contains("Throttl") || RETRIABLE.contains(&code) || status >= 500
}

/// A failed call in one short line: the service's error code and message, or the network
/// cause class. The SDK's Debug-heavy chain stays in the source, for `-v` and debug logs.
pub fn short_message<E: OperationError>(error: &SdkError<E, HttpResponse>) -> String {
    match error {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            // The separator follows, so a message's own full stop is dropped.
            match (e.code(), e.message().map(|m| m.trim_end_matches('.'))) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                (None, Some(message)) => format!("HTTP {status}: {message}"),
                (None, None) => format!("HTTP {status}"),
            }
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => "timed out".into(),
        // The request is signed before it is sent: without credentials it fails here, after
        // the provider chain tried (and failed) each source, instance metadata last.
        SdkError::DispatchFailure(_)
            if crate::net::chain(error)
                .to_ascii_lowercase()
                .contains("credential") =>
        {
            "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE)"
                .into()
        }
        _ => crate::net::cause(error).to_string(),
    }
}

/// A failed call as a port's error: the variant [`is_retriable_error`] picks, with a short
/// message ([`short_message`]) and the SDK error kept as the source.
pub(crate) fn classify<E: OperationError, T>(
    error: SdkError<E, HttpResponse>,
    transient: ErrorVariant<T>,
    permanent: ErrorVariant<T>,
) -> T {
    let message = short_message(&error);
    port_error(
        is_retriable_error(&error),
        message,
        error,
        transient,
        permanent,
    )
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::error::ConnectorError;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;

    use super::*;

    type Error = SdkError<GetItemError, HttpResponse>;

    #[test]
    fn throttling_and_server_errors_are_retriable_validation_is_not() {
        assert!(is_retriable_service_error(
            "ProvisionedThroughputExceededException",
            400
        ));
        assert!(is_retriable_service_error("ThrottlingException", 400));
        assert!(is_retriable_service_error("RequestLimitExceeded", 400));
        assert!(is_retriable_service_error("InternalServerError", 500));
        assert!(is_retriable_service_error("", 503));
        assert!(!is_retriable_service_error("ValidationException", 400));
        assert!(!is_retriable_service_error(
            "ResourceNotFoundException",
            400
        ));
        assert!(!is_retriable_service_error("AccessDeniedException", 400));
    }

    #[test]
    fn sqs_throttling_codes_are_retriable() {
        assert!(is_retriable_service_error("RequestThrottled", 400));
        assert!(is_retriable_service_error("KmsThrottled", 400));
        assert!(!is_retriable_service_error("InvalidParameterValue", 400));
        assert!(!is_retriable_service_error(
            "AWS.SimpleQueueService.NonExistentQueue",
            400
        ));
    }

    #[test]
    fn unbuildable_requests_are_permanent_transport_failures_are_not() {
        assert!(!is_retriable_error(&Error::construction_failure(
            "missing table name"
        )));
        assert!(is_retriable_error(&Error::timeout_error("read timed out")));
        assert!(is_retriable_error(&Error::dispatch_failure(
            ConnectorError::io("connection refused".into())
        )));
    }

    #[test]
    fn port_errors_keep_the_sdk_error_as_their_source() {
        let failure = |error: Error| classify(error, |m, s| (true, m, s), |m, s| (false, m, s));
        let (retriable, message, source) = failure(Error::construction_failure("no table name"));
        assert!(!retriable);
        assert!(message.contains("no table name"), "{message}");
        let (_, message, _) = failure(Error::dispatch_failure(ConnectorError::io(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        )));
        assert_eq!(message, "connection refused (nothing listens there)");
        assert!(source.unwrap().is::<Error>());
        assert!(failure(Error::timeout_error("read timed out")).0);
    }
}
