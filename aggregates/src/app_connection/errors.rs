/// Why a command on an app connection was refused. Each maps to one stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppConnectionError {
    #[error("no app is registered under this slug")]
    AppNotFound,
    #[error("an app with this slug already exists")]
    SlugTaken,
    #[error("the app name must be 1 to 200 characters")]
    InvalidName,
    #[error("the app is already connected to a Stripe account; disconnect it first")]
    AlreadyConnected,
    #[error("the app is not connected to a Stripe account")]
    NotConnected,
    #[error("the OAuth state is unknown, used, expired or belongs to another app")]
    InvalidState,
    #[error("no OAuth code exchange is in progress for this app")]
    NoExchangeInProgress,
}

impl AppConnectionError {
    /// The stable snake_case code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AppNotFound => "app_not_found",
            Self::SlugTaken => "slug_taken",
            Self::InvalidName => "invalid_name",
            Self::AlreadyConnected => "app_already_connected",
            Self::NotConnected => "app_not_connected",
            Self::InvalidState => "invalid_state",
            Self::NoExchangeInProgress => "no_exchange_in_progress",
        }
    }
}
