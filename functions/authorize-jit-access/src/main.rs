//! Lambda function `authorize-jit-access`: serves one route of the bundle.

// Lambda sends one invocation at a time, so one thread serves it: no
// worker threads to start, and no wake-ups handed between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jit_guard::run(jit_guard::Action::AuthorizeJitAccess).await
}
