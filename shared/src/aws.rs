//! What the AWS adapters share: one answer to "is this failed call worth retrying?", so the SQS
//! and DynamoDB adapters classify alike (Vector's `aws::is_retriable_error` plays this part).

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The SDK's raw HTTP response. Every service crate re-exports this same smithy type, so one
/// classifier serves them all.
pub use aws_sdk_dynamodb::config::http::HttpResponse;

use crate::BoxError;

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

/// A failed call as a port's error: classified by [`is_retriable_error`], with the error's whole
/// chain as the message (what the logs show) and the SDK error kept as the source.
pub(crate) fn port_error<E: OperationError, T>(
    error: SdkError<E, HttpResponse>,
    make: impl FnOnce(bool, String, BoxError) -> T,
) -> T {
    let retriable = is_retriable_error(&error);
    let message = DisplayErrorContext(&error).to_string();
    make(retriable, message, Box::new(error))
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
        let (retriable, message, source) = port_error(
            Error::construction_failure("missing table name"),
            |r, m, s| (r, m, s),
        );
        assert!(!retriable);
        assert!(message.contains("missing table name"), "{message}");
        assert!(source.downcast_ref::<Error>().is_some());
    }
}
