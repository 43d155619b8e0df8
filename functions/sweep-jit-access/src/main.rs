//! Lambda function `sweep-jit-access`: the scheduled sweep of expired and
//! out-of-policy role mappings.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    jit_guard::sweep::run().await
}
