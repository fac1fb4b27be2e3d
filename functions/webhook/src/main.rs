//! Lambda function `webhook`: signed source events provisioned within seconds (see
//! `m365_runtime::webhook`). Everything durable is built once per container.

use lambda_http::{Error, Request, service_fn};
use m365_runtime::context::Deployment;
use m365_runtime::{logging, webhook};

/// mimalloc: a sync maps, hashes and compares every user, allocating small values by the million;
/// glibc's allocator spent a third of a no-op run's CPU on them (`cargo bench -p
/// m365-integration-tests --bench provisioning -- c`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init("webhook");
    let deployment = Deployment::from_env().await?;
    let deployment = &deployment;
    lambda_http::run(service_fn(async move |request: Request| {
        Ok::<_, Error>(webhook::handle(deployment, request).await)
    }))
    .await
}
