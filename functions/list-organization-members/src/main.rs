//! Lambda function `list-organization-members`: serves one route of the bundle.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    jit_guard::run(jit_guard::Action::ListOrganizationMembers).await
}
