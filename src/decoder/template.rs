//! Messages to prompt tokens, and what to drop when a conversation outgrows
//! the model's context.
//!
//! Template (the one the model was trained with, `models/tinylm/README.md`):
//! `<|bos|>`, then each message as `<|role|>content<|end|>`, then
//! `<|assistant|>`. Contents are tokenized one by one and joined with the
//! special ids, never rendered into one string first: a user who writes
//! `<|system|>` in a message gets those characters, not the control token.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// The special token ids of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos: u32,
    pub eos: u32,
    pub end: u32,
    pub system: u32,
    pub user: u32,
    pub assistant: u32,
}

impl TemplateTokens {
    fn role(&self, role: Role) -> u32 {
        match role {
            Role::System => self.system,
            Role::User => self.user,
            Role::Assistant => self.assistant,
        }
    }

    /// Every control token: generating one of them ends the reply (`<|end|>`
    /// normally; a role token or `<|eos|>` means the model moved on).
    pub fn is_control(&self, id: u32) -> bool {
        [
            self.bos,
            self.eos,
            self.end,
            self.system,
            self.user,
            self.assistant,
        ]
        .contains(&id)
    }
}

/// A prompt ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// How many of the oldest messages were left out to fit the context.
    pub dropped_messages: usize,
}

/// Why a conversation cannot become a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// No user or assistant message to answer.
    NoTurns,
    /// Even with every droppable message dropped, the system message and the
    /// last message need `needed` tokens, more than `budget`.
    TooLong { needed: usize, budget: usize },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::NoTurns => write!(f, "messages must include a user message"),
            TemplateError::TooLong { needed, budget } => write!(
                f,
                "the system message and the last message need {needed} prompt tokens; \
                 at most {budget} fit with the requested max_tokens"
            ),
        }
    }
}

/// Renders `messages` (each content already tokenized, in `contents`) into
/// prompt ids of at most `budget` tokens. The oldest non-system messages are
/// dropped first, whole; the system messages and the last message are never
/// dropped (if those alone do not fit, it is an error, not a silent cut).
pub fn render(
    tokens: &TemplateTokens,
    messages: &[Message],
    contents: &[Vec<u32>],
    budget: usize,
) -> Result<Prompt, TemplateError> {
    debug_assert_eq!(messages.len(), contents.len());
    let last_turn = messages
        .iter()
        .rposition(|m| m.role != Role::System)
        .ok_or(TemplateError::NoTurns)?;
    // <|role|> content <|end|>
    let cost = |i: usize| contents[i].len() + 2;
    // <|bos|> ... <|assistant|>
    let mut total = 2 + (0..messages.len()).map(cost).sum::<usize>();
    let mut dropped = vec![false; messages.len()];
    let mut dropped_messages = 0;
    for i in 0..messages.len() {
        if total <= budget {
            break;
        }
        if messages[i].role != Role::System && i != last_turn {
            dropped[i] = true;
            dropped_messages += 1;
            total -= cost(i);
        }
    }
    if total > budget {
        return Err(TemplateError::TooLong {
            needed: total,
            budget,
        });
    }
    let mut ids = Vec::with_capacity(total);
    ids.push(tokens.bos);
    for (i, m) in messages.iter().enumerate() {
        if !dropped[i] {
            ids.push(tokens.role(m.role));
            ids.extend_from_slice(&contents[i]);
            ids.push(tokens.end);
        }
    }
    ids.push(tokens.assistant);
    Ok(Prompt {
        ids,
        dropped_messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TemplateTokens = TemplateTokens {
        bos: 0,
        eos: 1,
        system: 2,
        user: 3,
        assistant: 4,
        end: 5,
    };

    fn msg(role: Role) -> Message {
        Message {
            role,
            content: String::new(),
        }
    }

    #[test]
    fn renders_the_trained_template() {
        let messages = [msg(Role::System), msg(Role::User)];
        let contents = [vec![10, 11], vec![12]];
        let p = render(&T, &messages, &contents, 100).unwrap();
        assert_eq!(p.ids, [0, 2, 10, 11, 5, 3, 12, 5, 4]);
        assert_eq!(p.dropped_messages, 0);
    }

    #[test]
    fn drops_oldest_turns_but_never_the_system_message_or_the_last_turn() {
        let messages = [
            msg(Role::System),
            msg(Role::User),
            msg(Role::Assistant),
            msg(Role::User),
        ];
        let contents = [vec![10], vec![20, 20], vec![30, 30], vec![40]];
        // Full: 2 + 3 + 4 + 4 + 3 = 16. Budget 12 drops the first user turn (4).
        let p = render(&T, &messages, &contents, 12).unwrap();
        assert_eq!(p.ids, [0, 2, 10, 5, 4, 30, 30, 5, 3, 40, 5, 4]);
        assert_eq!(p.dropped_messages, 1);
        // Budget 8: system + last turn only.
        let p = render(&T, &messages, &contents, 8).unwrap();
        assert_eq!(p.ids, [0, 2, 10, 5, 3, 40, 5, 4]);
        assert_eq!(p.dropped_messages, 2);
        assert_eq!(
            render(&T, &messages, &contents, 7),
            Err(TemplateError::TooLong {
                needed: 8,
                budget: 7
            })
        );
    }

    #[test]
    fn a_conversation_needs_a_turn() {
        assert_eq!(
            render(&T, &[msg(Role::System)], &[vec![1]], 100),
            Err(TemplateError::NoTurns)
        );
    }
}
