//! TEMP
use std::path::Path;
pub struct EmbeddedPostgres {
    url: String,
}
impl EmbeddedPostgres {
    pub async fn start(_dir: &Path) -> anyhow::Result<Self> {
        anyhow::bail!("todo")
    }
    pub fn url(&self) -> &str {
        &self.url
    }
}
