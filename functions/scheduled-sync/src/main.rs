//! Lambda function `scheduled-sync`: one hop of a connection's sync (see
//! `m365_runtime::scheduled`). Everything durable is built once per container.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use m365_runtime::context::Deployment;
use m365_runtime::{logging, scheduled};

/// mimalloc: a sync maps, hashes and compares every user, allocating small values by the million;
/// glibc's allocator spent a third of a no-op run's CPU on them (`cargo bench -p
/// m365-integration-tests --bench provisioning -- c`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init("scheduled-sync");
    let deployment = Deployment::from_env().await?;
    let deployment = &deployment;
    lambda_runtime::run(service_fn(
        async move |event: LambdaEvent<serde_json::Value>| {
            let deadline = i64::try_from(event.context.deadline).unwrap_or(i64::MAX);
            scheduled::handle(
                deployment,
                event.payload,
                &event.context.request_id,
                deadline,
            )
            .await
        },
    ))
    .await
}
