"""Golden inputs for SmolLM2-135M-Instruct: tokenizer texts, chat conversations and
greedy prompts. Fixed lists and deterministic rules only (nothing random), so
golden.json is stable.

tokenizer_texts() -> list of (category, text)
CHATS            -> message lists, rendered with the chat template (generation prompt
                    added) into tokenizer texts of category "chat"
GREEDY_PROMPTS   -> message lists for the greedy decodings
"""

ENGLISH = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about a little.",
    "In the beginning the Universe was created. This has made a lot of people very angry.",
    "Cloudflare Workers run JavaScript and WebAssembly at the edge, close to the user.",
    "She sells sea shells by the sea shore.",
    "The committee postponed its decision until the next quarterly meeting.",
    "Why do we park on a driveway and drive on a parkway?",
    "A journey of a thousand miles begins with a single step.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "Please remember to bring your passport, your boarding pass, and a pen.",
    "He said, \"I'll be there at noon,\" but he never came.",
    "Can you believe it? We won!",
    "antidisestablishmentarianism",
    "Supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "THE END",
    "tHiS iS wEiRd CaSiNg",
    "I'm sure you're right, but they'll say we've lost and she'd disagree.",
    "DON'T SHOUT. It's FINE. WE'VE GOT IT.",
    "the cat's toy, the dogs' bowls, James's book",
    "rock 'n' roll",
    "e-mail, co-operate, well-known, state-of-the-art",
    "Mr. Smith went to Washington D.C. on Jan. 5th.",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,",
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:",
    "Dear Sir or Madam,\n\nI am writing to enquire about the position advertised on your website.\n\nYours faithfully,\nJane Doe",
    "Roses are red,\nViolets are blue,\nSugar is sweet,\nAnd so are you.",
    "Machine learning models learn patterns from data; large language models predict the next token.",
    "Q: What is the boiling point of water?\nA: 100 degrees Celsius at sea level.",
]

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * 2)\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\n",
    "class Foo:\n    def __init__(self):\n        self.x = 42\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "pub fn rope(x: &mut [f32], pos: usize, theta: f32) -> Result<(), Error> { Ok(()) }",
    "const sum = (a, b) => a + b;\nconsole.log(sum(1, 2));",
    "if (x === undefined || x == null) { return -1; }",
    "{\"name\": \"edgeinfer\", \"version\": \"0.1.0\", \"layers\": 30, \"ok\": true}",
    "<html>\n  <body>\n    <p class=\"x\">Hello &amp; welcome</p>\n  </body>\n</html>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name LIMIT 10;",
    "#!/usr/bin/env bash\nset -euo pipefail\necho \"$HOME\" | grep -c x\n",
    "\tindented with a tab\n\t\ttwo tabs\n",
    "    x = 1\n        y = 22\n            z = 333\n",
    "a[i][j] += b[k] * c[k][j]; // matrix multiply",
    "x<<=2; y>>=3; z**=4; w//=5; p!=q; r<=s;",
    "print(f\"{name!r:>10} {value:.3f}\")",
    "git commit -m \"fix: handle empty input (#123)\"",
    "https://example.com/path/to/page?query=1&lang=en#section-2",
    "user@example.org, admin+test@sub.domain.co.uk",
    "C:\\Users\\Public\\Documents\\file.txt",
    "/* comment */ int main(void) { return 0; }",
    "@decorator\ndef f(*args, **kwargs):\n    ...\n",
    "   \n   \n",
    "x = [1, 2, 3]\ny = {'a': 1, 'b': 2}\n",
]

NUMBERS = [
    "12345 3.14",
    "0",
    "7",
    "42",
    "1000000",
    "1,000,000",
    "3.14159265358979",
    "-273.15",
    "1e-5 and 6.022e23",
    "2024-06-11T12:34:56Z",
    "+1 (555) 123-4567",
    "0x1F 0b1010 0o777",
    "v1.2.3-rc.4",
    "50% of $19.99 is $9.995",
    "Pi is approximately 3.14, e is about 2.718.",
    "In 1969, 3 astronauts flew 384,400 km.",
    "abc123def456",
    "COVID-19 H2O CO2 MP3 4K 5G",
    "a 1",
    "a  1",
    "a   1",
    "x\n1",
    "x\n\n1",
    "x\t\t1",
    "  42",
    "\n\n42",
    "1 2 3 4 5 6 7 8 9 10",
    "1  2   3    4",
    "½ ¼ ¾ ² ³ ¹",
    "H₂O and x² + y² = z²",
    " ½ cup",
    "Ⅻ Ⅳ ⅷ",
    "٠١٢٣٤٥٦٧٨٩",
    "१२३४",
    "１２３ full width",
    "①②③",
    "99 bottles of beer on the wall, 99 bottles of beer.",
    "3+4=7, 10-2=8, 6*7=42, 9/3=3",
]

PUNCTUATION = [
    "?",
    "!!!",
    "...",
    "?!?!",
    "Hello, world!",
    "Wait... what?!",
    "(parentheses) [brackets] {braces} <angles>",
    "\"double\" 'single' `backtick`",
    "semi;colon: dash - em—dash – en–dash",
    "#hashtag @mention $dollar %percent ^caret &amp *star",
    "~tilde |pipe \\backslash /slash",
    "....,,,,;;;;::::",
    "a.b.c.d",
    "-- --- ----",
    "***bold*** __under__",
    "''''",
]

UNICODE = [
    "Hello 👋 world 🌍",
    "🙂🙃😀😂🤣",
    "👨‍👩‍👧‍👦 family",
    "👍🏽 thumbs",
    "🇫🇷 🇯🇵 🇺🇸",
    "❤️ love",
    "I ♥ NY",
    "“smart quotes” and ‘single’ ones…",
    "∑∫√∞≠≤≥±×÷",
    "α β γ δ ε — Greek letters",
    "©®™ §¶ †‡ •",
    "€100 £50 ¥1000 ₹20",
    "zero\u200bwidth\u200bspace",
    "soft\u00adhyphen",
    "\ufeffbyte order mark",
    "→ ← ↑ ↓ ⇒",
    "♠♣♥♦",
    "😀" * 5,
]

ACCENTED = [
    "café",
    "cafe\u0301",
    "naïve résumé",
    "Ça va très bien, merci. Où est la bibliothèque ?",
    "Größe, Straße, Übermäßig, schön",
    "¿Dónde está la estación? ¡Qué bueno!",
    "São Paulo, ação, coração",
    "Tiếng Việt có dấu",
    "Zażółć gęślą jaźń",
    "İstanbul, ığdır, şeker, çiçek",
    "Ångström, Øresund, Ærø",
    "Dvořák, Smetana, Janáček",
    "Ελληνικά: Καλημέρα κόσμε",
    "Привет, мир! Как дела?",
    "Українська мова",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
]

CJK = [
    "你好，世界！",
    "我爱北京天安门。",
    "机器学习是人工智能的一个分支。",
    "こんにちは世界",
    "日本語のテキストです。カタカナとひらがな。",
    "東京は日本の首都です。",
    "안녕하세요 세계",
    "한국어 문장입니다.",
    "Mixed 中文 and English 混合",
    "2024年6月11日",
    "「引用」と『二重引用』",
]

WHITESPACE = [
    "",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\n\n\n",
    "\t",
    "\r\n",
    " leading space",
    "  two leading spaces",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "a  b",
    "a   b",
    "a    b",
    "a\nb",
    "a\n\nb",
    "a \n b",
    " \n ",
    "line one\n  line two\n    line three",
    "x" + " " * 10 + "y",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "line\u2028separator",
    "tab\tseparated\tvalues",
    "\n leading newline",
    "ends with newline\n",
    "  \t \n mixed  \t whitespace \n\n",
]

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "Hello<|im_end|>world",
    "text <|endoftext|> text",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_end|><|im_end|>",
    "< |im_start| >",
    "<|im_start",
    "im_start|>",
    "<|IM_START|>",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<file_sep><filename>main.py\nprint('hi')",
    "<repo_name>edgeinfer<gh_stars>100",
    "<issue_start>bug<issue_comment>fixed<issue_closed>",
    "<reponame> <jupyter_start><jupyter_text> <jupyter_script>",
]

# Chat conversations for the tokenizer golden (rendered by the chat template with
# add_generation_prompt=True; the template adds its default system message when the
# first message is not one).
CHATS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": ""}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "Empty system prompt."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "Write a Python function that adds two numbers."},
     {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
     {"role": "user", "content": "Now in Rust."}],
    [{"role": "user", "content": "Compute 12345 * 678."}],
    [{"role": "user", "content": "Translate to French: I love cheese."}],
    [{"role": "user", "content": "Was ist 2 + 2? Antworte auf Deutsch."}],
    [{"role": "user", "content": "你好，你是谁？"}],
    [{"role": "user", "content": "Describe this emoji: 🦀"}],
    [{"role": "user", "content": "  leading and trailing spaces  "}],
    [{"role": "user", "content": "Line one\nLine two\n\nLine four"}],
    [{"role": "user", "content": "Please ignore <|im_end|> this."}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And grass?"}],
    [{"role": "user", "content": "List three colors."}],
    [{"role": "user", "content": "What's 7 times 8?"}],
    [{"role": "user", "content": "Summarize: The meeting was moved from Monday to Wednesday at 3 p.m."}],
    [{"role": "assistant", "content": "I start the conversation."}, {"role": "user", "content": "OK."}],
    [{"role": "user", "content": "Explain recursion.\n\n\tUse an example."}],
    [{"role": "user", "content": "¿Cómo estás?"}],
    [{"role": "user", "content": "Give me the JSON {\"a\": 1}."}],
    [{"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
     {"role": "user", "content": "Same as the default system prompt."}],
]

GREEDY_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Translate 'good morning' to Spanish."}],
    [{"role": "user", "content": "List three colors."}],
    [{"role": "user", "content": "What is 12 + 7?"}],
    [{"role": "user", "content": "What is 15 multiplied by 3?"}],
    [{"role": "user", "content": "Give me a synonym for 'happy'."}],
    [{"role": "user", "content": "Explain what a computer is in one sentence."}],
    [{"role": "user", "content": "Who wrote Romeo and Juliet?"}],
    [{"role": "user", "content": "Name a fruit that is yellow."}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "How many days are in a week?"}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Tell me a fun fact about cats."}],
]
# Prompts (indices into GREEDY_PROMPTS) whose first-step logits are summarised.
FIRST_LOGITS_PROMPTS = [0, 1, 4]
# Logits recorded at these fixed ids for those prompts: the control tokens 0..2,
# single bytes and digits, common words and the ends of the vocabulary.
FIXED_LOGIT_IDS = [0, 1, 2, 17, 33, 198, 216, 253, 314, 335, 1000, 2683, 4093, 5000, 9531,
                   12000, 20000, 30000, 40000, 49151]


def generated():
    """Texts made by rule: runs, lengths, a long joined text."""
    out = []
    for ch in ("a", " ", "\n", "!", "1", "é", "中"):
        for n in (4, 7, 33):
            out.append(ch * n)
    for n in (9, 10, 99, 100, 255, 256, 1023, 65535, 4294967296, 18446744073709551615):
        out.append(str(n))
    out.append(" ".join(str(i) for i in range(1, 41)))
    out.append("\n\n".join(ENGLISH[1:12]))
    out.append(" ".join(CODE[:6]))
    return out


def tokenizer_texts():
    """(category, text) pairs, without the chat ones (reference.py renders CHATS)."""
    out = []
    for cat, lst in (("english", ENGLISH), ("code", CODE), ("numbers", NUMBERS),
                     ("punctuation", PUNCTUATION), ("unicode", UNICODE), ("accented", ACCENTED),
                     ("cjk", CJK), ("whitespace", WHITESPACE), ("special", SPECIAL),
                     ("generated", generated())):
        out += [(cat, t) for t in lst]
    seen = set()
    for _, t in out:
        assert t not in seen, repr(t)
        seen.add(t)
    return out
