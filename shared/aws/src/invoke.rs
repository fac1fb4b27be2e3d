//! Invoking a deployed Lambda function and reading its answer: the CLI's `cloud sync --function`
//! runs provision on demand inside the deployment (the function's network, role and secret),
//! not on the operator's machine.
//!
//! A synchronous invocation (`RequestResponse`) answers 200 whether the function succeeded or
//! failed; a failure is told by the `X-Amz-Function-Error` header (`FunctionError` in the SDK)
//! and a payload `{"errorType": …, "errorMessage": …}`
//! (<https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html>).

use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::Value;

/// Invokes functions of the deployment.
#[derive(Debug, Clone)]
pub struct FunctionInvoker {
    client: aws_sdk_lambda::Client,
}

/// Why an invocation gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Lambda refused the call (no such function, not allowed, throttled): its code and message.
    #[error("invoking function {function} failed: {code}: {message}")]
    Refused {
        function: String,
        code: String,
        message: String,
    },
    /// The call did not reach Lambda, or its answer could not be read.
    #[error("invoking function {function} failed: {detail}")]
    Transport { function: String, detail: String },
    /// The function ran and failed: its error type and message.
    #[error("function {function} failed: {error_type}: {message}")]
    Function {
        function: String,
        error_type: String,
        message: String,
    },
    /// The function answered with something that is not JSON.
    #[error("function {function} answered with something that is not JSON: {detail}")]
    NotJson { function: String, detail: String },
}

impl FunctionInvoker {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_lambda::Client::new(config),
        }
    }

    /// Invokes `function` (name, ARN or partial ARN) with `payload` and waits for its answer.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Result<Value, InvokeError> {
        let answer = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| match e.code() {
                Some(code) => InvokeError::Refused {
                    function: function.to_owned(),
                    code: code.to_owned(),
                    message: e.message().unwrap_or_default().to_owned(),
                },
                None => InvokeError::Transport {
                    function: function.to_owned(),
                    detail: DisplayErrorContext(&e).to_string(),
                },
            })?;
        let bytes = answer.payload().map(Blob::as_ref).unwrap_or_default();
        let value: Value = serde_json::from_slice(bytes).map_err(|e| InvokeError::NotJson {
            function: function.to_owned(),
            detail: e.to_string(),
        })?;
        if answer.function_error().is_some() {
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("(none given)")
                    .to_owned()
            };
            return Err(InvokeError::Function {
                function: function.to_owned(),
                error_type: field("errorType"),
                message: field("errorMessage"),
            });
        }
        Ok(value)
    }
}
