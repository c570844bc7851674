//! Splitting a command line into arguments the way Go receptor does (it uses
//! `github.com/google/shlex`), without any shell: whitespace separates words, single
//! quotes keep everything literally, double quotes keep everything but let a backslash
//! take the next character literally, a backslash outside quotes takes the next character
//! literally, and a `#` at the start of a word starts a comment that runs to the end of
//! the line.
//!
//! Shared by the host (`command-service`) and plugins (`work-command` parameters).

/// Error for a quote that is never closed.
pub const UNCLOSED_QUOTE: &str = "EOF found when expecting closing quote";
/// Error for a backslash at the very end.
pub const TRAILING_ESCAPE: &str = "EOF found after escape character";

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Word,
    Escape,
    DoubleQuoted,
    DoubleQuotedEscape,
    SingleQuoted,
    Comment,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits `line` into words.
pub fn split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut state = State::Start;
    for c in line.chars() {
        state = match state {
            State::Start => match c {
                c if is_space(c) => State::Start,
                '"' => State::DoubleQuoted,
                '\'' => State::SingleQuoted,
                '\\' => State::Escape,
                '#' => State::Comment,
                c => {
                    word.push(c);
                    State::Word
                }
            },
            State::Word => match c {
                c if is_space(c) => {
                    words.push(std::mem::take(&mut word));
                    State::Start
                }
                '"' => State::DoubleQuoted,
                '\'' => State::SingleQuoted,
                '\\' => State::Escape,
                c => {
                    word.push(c);
                    State::Word
                }
            },
            State::Escape => {
                word.push(c);
                State::Word
            }
            State::DoubleQuoted => match c {
                '"' => State::Word,
                '\\' => State::DoubleQuotedEscape,
                c => {
                    word.push(c);
                    State::DoubleQuoted
                }
            },
            State::DoubleQuotedEscape => {
                word.push(c);
                State::DoubleQuoted
            }
            State::SingleQuoted => match c {
                '\'' => State::Word,
                c => {
                    word.push(c);
                    State::SingleQuoted
                }
            },
            State::Comment => match c {
                '\n' => State::Start,
                _ => State::Comment,
            },
        };
    }
    match state {
        State::Start | State::Comment => {}
        State::Word => words.push(word),
        State::Escape | State::DoubleQuotedEscape => return Err(TRAILING_ESCAPE),
        State::DoubleQuoted | State::SingleQuoted => return Err(UNCLOSED_QUOTE),
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| vec![format!("error: {e}")])
    }

    // Expected values observed with Go receptor 1.6.9's work-command runner.
    #[test]
    fn matches_go_receptor() {
        assert_eq!(ok("a \"b c\" d"), ["a", "b c", "d"]);
        assert_eq!(ok("a#b #c d"), ["a#b"]);
        assert_eq!(
            ok("x\\ y \"q\\\"z\" 'p\\q' e\"f g\"h"),
            ["x y", "q\"z", "p\\q", "ef gh"]
        );
        assert_eq!(
            ok("\"a\\b\" '' \"\" a'b'c x\ty\nz"),
            ["ab", "", "", "abc", "x", "y", "z"]
        );
        assert_eq!(split("tr\\"), Err(TRAILING_ESCAPE));
        assert_eq!(split("a 'b c"), Err(UNCLOSED_QUOTE));
        assert_eq!(
            ok("-c \"for i in {1..5}; do echo $i; sleep 1; done\""),
            ["-c", "for i in {1..5}; do echo $i; sleep 1; done"]
        );
    }

    #[test]
    fn comments_end_at_newlines() {
        assert_eq!(ok("a #c\nd"), ["a", "d"]);
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("   "), Vec::<String>::new());
    }
}
