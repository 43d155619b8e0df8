//! Lambda function `sweep-jit-access`: the scheduled sweep of expired and
//! out-of-policy role mappings.

// Lambda sends one invocation at a time, so one thread serves it: no
// worker threads to start, and no wake-ups handed between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jit_guard::sweep::run().await
}
