//! Lambda function `revoke-jit-role`: removes one role of one user.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    jit_guard::run(jit_guard::Action::RevokeJitRole).await
}
