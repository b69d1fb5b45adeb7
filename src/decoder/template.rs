//! Messages to prompt tokens, and what to drop when a conversation outgrows
//! the model's context.
//!
//! A [`Template`] is the model's own chat template as token ids: what opens
//! the prompt, what goes before and after each message's content (per
//! role), and the reply's opening (the assistant's prefix). Two are in use:
//! - edgeinfer's tinylm (`models/tinylm/README.md`): `<|bos|>`, then each
//!   message as `<|role|>content<|end|>`, then `<|assistant|>`;
//! - ChatML (SmolLM2): each message as `<|im_start|>role\ncontent<|im_end|>\n`,
//!   then `<|im_start|>assistant\n`, with the template's default system
//!   message first when the conversation does not start with one.
//!
//! Messages are tokenized one by one (with the text the template puts
//! before their content: ChatML's `role\n`, since a content that starts
//! with spaces joins that newline in one token) and joined with the
//! template's control ids, never rendered into one string first: a user who
//! writes `<|im_start|>` in a message gets those characters, not the control
//! token. This gives the reference's `apply_chat_template` ids
//! (tests/smollm2.rs).

use crate::error::TemplateError;

/// Serialized by name: how a session's turn travels to its Durable Object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result (chat completions' `role: "tool"`, the Responses
    /// API's `function_call_output`): ChatML writes it as the role `tool`,
    /// as SmolLM2's chat template renders any role; a template without one
    /// (tinylm) writes it as a user message.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Where a model's template comes from: its six control tokens (tinylm),
/// or ChatML's two and a default system message, completed from the
/// tokenizer by [`super::chat::ChatModel::load`].
#[derive(Debug, Clone, Copy)]
pub enum TemplateSpec {
    Tokens(TemplateTokens),
    ChatMl {
        start: u32,
        end: u32,
        default_system: &'static str,
    },
}

/// A chat template as token ids (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Opens the prompt.
    pub begin: Vec<u32>,
    /// Control ids before a message: system, user, assistant, tool.
    pub prefixes: [Vec<u32>; 4],
    /// Text before a message's content, tokenized with it (per role).
    pub texts: [String; 4],
    /// After a message's content.
    pub suffix: Vec<u32>,
    /// What the prompt ends with: the opening of the reply.
    pub reply: Vec<u32>,
    /// The system message put first when the conversation does not begin
    /// with one (the template's own default), tokenized with its text.
    pub default_system: Option<Vec<u32>>,
    /// Tokens that end a reply when generated.
    pub controls: Vec<u32>,
}

impl From<TemplateTokens> for Template {
    fn from(t: TemplateTokens) -> Self {
        Template {
            begin: vec![t.bos],
            prefixes: [
                vec![t.system],
                vec![t.user],
                vec![t.assistant],
                vec![t.user],
            ],
            texts: Default::default(),
            suffix: vec![t.end],
            reply: vec![t.assistant],
            default_system: None,
            // `<|end|>` normally; a role token or `<|eos|>` means the model
            // moved on.
            controls: vec![t.bos, t.eos, t.end, t.system, t.user, t.assistant],
        }
    }
}

impl Template {
    fn prefix(&self, role: Role) -> &[u32] {
        &self.prefixes[role as usize]
    }

    /// The ids every prompt without a system message of its own starts
    /// with: the template's opening and its default system message
    /// (`None` without one). They are the server's, not any caller's, so
    /// their key/value cache may be shared by every caller (see
    /// shard/src/shard.rs, `PUBLIC`) without telling one about another.
    pub fn public_start(&self) -> Option<Vec<u32>> {
        let content = self.default_system.as_deref()?;
        Some(
            [
                &self.begin,
                self.prefix(Role::System),
                content,
                &self.suffix,
            ]
            .concat(),
        )
    }

    /// The text a message of `role` is tokenized with, before its content.
    pub fn text(&self, role: Role) -> &str {
        &self.texts[role as usize]
    }

    /// Generating this token ends the reply.
    pub fn is_control(&self, id: u32) -> bool {
        self.controls.contains(&id)
    }
}

/// A prompt ready for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// How many of the oldest messages were left out to fit the context.
    pub dropped_messages: usize,
}

/// Renders `messages` (each tokenized, with its role's text before its
/// content, in `contents`) into
/// prompt ids of at most `budget` tokens. The oldest non-system messages are
/// dropped first, whole; the system messages and the last message are never
/// dropped (if those alone do not fit, it is an error, not a silent cut).
pub fn render(
    template: &Template,
    messages: &[Message],
    contents: &[Vec<u32>],
    budget: usize,
) -> Result<Prompt, TemplateError> {
    debug_assert_eq!(messages.len(), contents.len());
    let last_turn = messages
        .iter()
        .rposition(|m| m.role != Role::System)
        .ok_or(TemplateError::NoTurns)?;
    let wrapped = |role: Role, content: &[u32]| {
        template.prefix(role).len() + content.len() + template.suffix.len()
    };
    let cost = |i: usize| wrapped(messages[i].role, &contents[i]);
    let default_system = template
        .default_system
        .as_deref()
        .filter(|_| messages.first().is_some_and(|m| m.role != Role::System));
    let mut total = template.begin.len()
        + default_system.map_or(0, |c| wrapped(Role::System, c))
        + (0..messages.len()).map(cost).sum::<usize>()
        + template.reply.len();
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
    ids.extend_from_slice(&template.begin);
    let mut push = |role: Role, content: &[u32]| {
        ids.extend_from_slice(template.prefix(role));
        ids.extend_from_slice(content);
        ids.extend_from_slice(&template.suffix);
    };
    if let Some(content) = default_system {
        push(Role::System, content);
    }
    for (i, m) in messages.iter().enumerate() {
        if !dropped[i] {
            push(m.role, &contents[i]);
        }
    }
    ids.extend_from_slice(&template.reply);
    Ok(Prompt {
        ids,
        dropped_messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: TemplateTokens = TemplateTokens {
        bos: 0,
        eos: 1,
        system: 2,
        user: 3,
        assistant: 4,
        end: 5,
    };

    fn tinylm() -> Template {
        Template::from(TOKENS)
    }

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
        let p = render(&tinylm(), &messages, &contents, 100).unwrap();
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
        let p = render(&tinylm(), &messages, &contents, 12).unwrap();
        assert_eq!(p.ids, [0, 2, 10, 5, 4, 30, 30, 5, 3, 40, 5, 4]);
        assert_eq!(p.dropped_messages, 1);
        // Budget 8: system + last turn only.
        let p = render(&tinylm(), &messages, &contents, 8).unwrap();
        assert_eq!(p.ids, [0, 2, 10, 5, 3, 40, 5, 4]);
        assert_eq!(p.dropped_messages, 2);
        assert_eq!(
            render(&tinylm(), &messages, &contents, 7),
            Err(TemplateError::TooLong {
                needed: 8,
                budget: 7
            })
        );
    }

    #[test]
    fn a_conversation_needs_a_turn() {
        assert_eq!(
            render(&tinylm(), &[msg(Role::System)], &[vec![1]], 100),
            Err(TemplateError::NoTurns)
        );
    }
}

#[cfg(test)]
mod chatml_tests {
    use super::*;

    /// ChatML with start 1, end 2, "\n" = 198 and one-token role names
    /// (which the contents below stand for: 70 198 = "system\n").
    fn chatml() -> Template {
        Template {
            begin: Vec::new(),
            prefixes: [vec![1], vec![1], vec![1], vec![1]],
            texts: [
                "system\n".into(),
                "user\n".into(),
                "assistant\n".into(),
                "tool\n".into(),
            ],
            suffix: vec![2, 198],
            reply: vec![1, 72, 198],
            default_system: Some(vec![70, 198, 90, 91]),
            controls: vec![0, 1, 2],
        }
    }

    fn msg(role: Role) -> Message {
        Message {
            role,
            content: String::new(),
        }
    }

    #[test]
    fn a_prompt_without_a_system_message_starts_with_the_public_start() {
        let mut t = chatml();
        let start = t.public_start().unwrap();
        assert_eq!(start, [1, 70, 198, 90, 91, 2, 198]);
        let messages = [msg(Role::User), msg(Role::Assistant), msg(Role::User)];
        let contents = [vec![10], vec![11], vec![12]];
        let prompt = render(&t, &messages, &contents, 100).unwrap();
        assert!(prompt.ids.starts_with(&start), "{:?}", prompt.ids);
        // A conversation with its own system message does not.
        let messages = [msg(Role::System), msg(Role::User)];
        let prompt = render(&t, &messages, &contents[..2], 100).unwrap();
        assert!(!prompt.ids.starts_with(&start), "{:?}", prompt.ids);
        t.default_system = None;
        assert_eq!(t.public_start(), None, "no default system message");
    }

    #[test]
    fn the_default_system_message_comes_first_unless_one_is_given() {
        let t = chatml();
        let p = render(&t, &[msg(Role::User)], &[vec![71, 198, 10]], 100).unwrap();
        assert_eq!(
            p.ids,
            [1, 70, 198, 90, 91, 2, 198, 1, 71, 198, 10, 2, 198, 1, 72, 198]
        );
        let p = render(
            &t,
            &[msg(Role::System), msg(Role::User)],
            &[vec![70, 198, 5], vec![71, 198, 10]],
            100,
        )
        .unwrap();
        assert_eq!(
            p.ids,
            [1, 70, 198, 5, 2, 198, 1, 71, 198, 10, 2, 198, 1, 72, 198]
        );
        // The default counts against the budget and is never dropped.
        assert_eq!(
            render(&t, &[msg(Role::User)], &[vec![71, 198, 10]], 15),
            Err(TemplateError::TooLong {
                needed: 16,
                budget: 15
            })
        );
    }
}
