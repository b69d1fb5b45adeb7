//! Which API route a command's lines go to, and what a line of it looks like.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    Classify,
    Embed,
    Chat,
}

impl ApiRoute {
    pub fn path(self) -> &'static str {
        match self {
            ApiRoute::Classify => "/v1/classify",
            ApiRoute::Embed => "/v1/embeddings",
            ApiRoute::Chat => "/v1/chat/completions",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiRoute::Classify => "classify",
            ApiRoute::Embed => "embed",
            ApiRoute::Chat => "chat",
        }
    }

    /// What a line should look like, for error messages.
    pub fn line_shape(self) -> &'static str {
        match self {
            ApiRoute::Classify | ApiRoute::Embed => "{\"input\": \"text\"}",
            ApiRoute::Chat => "{\"messages\": [{\"role\": \"user\", \"content\": \"...\"}]}",
        }
    }

    /// Lines that may share one request.
    pub fn batches(self) -> bool {
        self != ApiRoute::Chat
    }
}
