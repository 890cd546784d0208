//! The line-level syntax of one instruction, after BuildKit's parser: the keyword and its
//! `--flags`, words with their quotes kept, whitespace lists, JSON arrays and heredoc markers.

use super::ast::Heredoc;
use super::error::ParseErrorKind;
use crate::shell_words::{Lexer, NoVariables};

/// The blanks that separate words in whitespace lists (docker's `[\t\v\f\r ]+`).
fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// An instruction line split into keyword, flags and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split<'a> {
    /// The keyword as written.
    pub keyword: &'a str,
    /// The `--flags` before the arguments, quotes and escapes removed.
    pub flags: Vec<String>,
    /// The rest, trimmed.
    pub args: &'a str,
}

/// Splits `line` into keyword, leading `--flags` and arguments.
pub(crate) fn split_command(line: &str, escape: char) -> Split<'_> {
    let line = line.trim();
    let (keyword, rest) = match line.find(is_blank) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_blank)),
        None => (line, ""),
    };
    let (args, flags) = extract_flags(rest, escape);
    Split {
        keyword,
        flags,
        args: args.trim(),
    }
}

/// Takes the words that start with `--` off the front of `line` (a lone `--` ends them);
/// returns the rest and the flags with their quotes and escapes removed.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &line[pos..];
        let start = pos + (rest.len() - rest.trim_start().len());
        if start == line.len() {
            return ("", flags);
        }
        if !line[start..].starts_with("--") {
            return (&line[start..], flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut chars = line[start..].char_indices();
        let mut end = line.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = start + i;
                    break;
                }
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == escape => {
                    // An escape at the very end is dropped.
                    if let Some((_, e)) = chars.next() {
                        word.push(e);
                    }
                }
                _ => word.push(c),
            }
        }
        if word == "--" {
            return (&line[end..], flags);
        }
        flags.push(word);
        pos = end;
    }
}

/// Splits at whitespace, keeping quotes and escapes in the words (quoted whitespace does not
/// split): how ENV, LABEL and ARG see their arguments before expansion.
pub(crate) fn words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                continue;
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
        }
        in_word = true;
        // The escape character keeps the next character in the word, quote or blank, except
        // inside single quotes, where nothing is escaped.
        if c == escape && quote != Some('\'') {
            let Some(next) = chars.next() else {
                break;
            };
            word.push(c);
            word.push(next);
            continue;
        }
        word.push(c);
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Splits at blanks, quotes or not (FROM, EXPOSE, and COPY/ADD/VOLUME outside JSON).
pub(crate) fn blank_separated(text: &str) -> Vec<String> {
    text.split(is_blank)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Splits at the first run of blanks: `ENV name value` gives `name` and `value`.
pub(crate) fn split_once_blank(text: &str) -> Option<(&str, &str)> {
    let i = text.find(is_blank)?;
    Some((&text[..i], text[i..].trim_start_matches(is_blank)))
}

/// What a possible JSON array turned out to be.
pub(crate) enum Json {
    /// A JSON array of strings: the exec form.
    Strings(Vec<String>),
    /// Not a JSON array: the shell form.
    NotJson,
}

/// Reads `text` as a JSON array of strings. Text that is not a JSON array is the shell form
/// (docker falls back to it for invalid JSON); a JSON array with a non-string in it is an
/// error.
pub(crate) fn json_array(text: &str) -> Result<Json, ParseErrorKind> {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Ok(Json::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(Json::NotJson);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(ParseErrorKind::invalid(
                "when using JSON array syntax, arrays must be comprised of strings only",
            )),
        })
        .collect::<Result<_, _>>()
        .map(Json::Strings)
}

/// Reads one word as a heredoc marker (`<<EOF`, `<<-EOF`, `3<<'EOF'`, `<< EOF`): `None` when it
/// is not one, an error when its quotes do not close. The body is left empty.
pub(crate) fn heredoc_marker(word: &str) -> Result<Option<Heredoc>, ParseErrorKind> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (strip_tabs, rest) = match rest.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(['\t', '\n', '\x0c', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let read = |keep_quotes| {
        Lexer::heredoc_delimiter(keep_quotes)
            .expand_words(rest, &NoVariables)
            .map_err(|e| ParseErrorKind::invalid(format!("heredoc delimiter: {e}")))
    };
    let plain = read(false)?;
    let [name] = plain.as_slice() else {
        return Ok(None);
    };
    let raw = read(true)?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    // A quoted delimiter (any part of it) means the body is taken literally.
    let expand = raw.len() == 1 && quotes(name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name: name.clone(),
        body: String::new(),
        expand,
        strip_tabs,
        fd: word[..digits].parse().ok(),
    }))
}

/// The heredoc markers in an instruction line, in order.
pub(crate) fn heredocs_in_line(line: &str) -> Result<Vec<Heredoc>, ParseErrorKind> {
    // Words that do not lex (an unclosed quote) hold no heredoc, as in BuildKit.
    let Ok(words) = Lexer::heredoc_markers().expand_words(line, &NoVariables) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = heredoc_marker(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_flags_and_arguments() {
        let s = split_command("  COPY --from=build --chown=1:2 a b  ", '\\');
        assert_eq!(s.keyword, "COPY");
        assert_eq!(s.flags, ["--from=build", "--chown=1:2"]);
        assert_eq!(s.args, "a b");
        let s = split_command("COPY --doit=true -- foo /tmp/", '\\');
        assert_eq!(
            (s.flags.as_slice(), s.args),
            (&["--doit=true".to_owned()][..], "foo /tmp/")
        );
        let s = split_command("COPY -- foo /tmp/", '\\');
        assert!(s.flags.is_empty());
        assert_eq!(s.args, "foo /tmp/");
        let s = split_command("CMD --doit -- [ ]", '\\');
        assert_eq!(
            (s.flags.as_slice(), s.args),
            (&["--doit".to_owned()][..], "[ ]")
        );
        let s = split_command("RUN --mount=\"type=bind,target=/a b\" echo", '\\');
        assert_eq!(s.flags, ["--mount=type=bind,target=/a b"]);
        assert_eq!(s.args, "echo");
        let s = split_command("HEALTHCHECK", '\\');
        assert_eq!((s.keyword, s.args), ("HEALTHCHECK", ""));
        let s = split_command("run\techo -- hi", '\\');
        assert_eq!((s.keyword, s.args), ("run", "echo -- hi"));
        assert!(split_command("RUN --network=none", '\\').args.is_empty());
    }

    #[test]
    fn words_keep_their_quotes() {
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
            ("àöû", &["àöû"]),
            ("föo bàr \"âbc xÿz\"", &["föo", "bàr", "\"âbc xÿz\""]),
            ("a='x \\' y' b", &["a='x \\'", "y' b"]),
            ("a=\"x \\\" y\" b", &["a=\"x \\\" y\"", "b"]),
            ("trailing\\", &["trailing"]),
        ];
        for (input, want) in cases {
            assert_eq!(words(input, '\\'), *want, "{input:?}");
        }
    }

    #[test]
    fn json_or_not() {
        let strings = |t| match json_array(t) {
            Ok(Json::Strings(v)) => Some(v),
            Ok(Json::NotJson) => None,
            Err(e) => panic!("{t}: {e}"),
        };
        assert_eq!(strings("[]"), Some(vec![]));
        assert_eq!(
            strings(" [ \"a\",\t\"b\" ] "),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            strings(r#"["abc 123", "♥", "\" \\ \/ \b \f \n \r \t \u0000"]"#),
            Some(vec![
                "abc 123".into(),
                "♥".into(),
                "\" \\ / \u{8} \u{c} \n \r \t \0".into()
            ])
        );
        assert_eq!(strings("['single', 'quotes']"), None);
        assert_eq!(strings("[\"unterminated\""), None);
        assert_eq!(strings("[\"a\"] trailing"), None);
        assert_eq!(strings("echo [\"a\"]"), None);
        assert!(json_array("[ \"echo\", [ \"nested json\" ] ]").is_err());
        assert!(json_array("[1, 2]").is_err());
    }

    #[test]
    fn heredoc_markers() {
        for valid in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            let doc = heredoc_marker(valid).unwrap().unwrap();
            assert_eq!(doc.name, "EOF", "{valid}");
        }
        for invalid in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(heredoc_marker(invalid).is_err(), "{invalid}");
        }
        for not in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(heredoc_marker(not).unwrap(), None, "{not}");
        }
        let doc = heredoc_marker("3<<-'e'o\\'f").unwrap().unwrap();
        assert_eq!(
            (doc.name.as_str(), doc.expand, doc.strip_tabs, doc.fd),
            ("eo'f", false, true, Some(3))
        );
        let doc = heredoc_marker("<<eo\\'f").unwrap().unwrap();
        assert_eq!((doc.name.as_str(), doc.expand), ("eo'f", true));
        let doc = heredoc_marker("<<$EOF").unwrap().unwrap();
        assert_eq!((doc.name.as_str(), doc.expand), ("$EOF", true));
    }

    #[test]
    fn heredocs_in_a_line() {
        let names = |line| -> Vec<String> {
            heredocs_in_line(line)
                .unwrap()
                .into_iter()
                .map(|d| d.name)
                .collect()
        };
        assert_eq!(names("RUN <<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<EOF sh"), ["EOF"]);
        assert_eq!(names("RUN <<  EOF  > foo"), ["EOF"]);
        assert_eq!(names("COPY <<FILE1 <<-FILE2 /dest"), ["FILE1", "FILE2"]);
        assert_eq!(names("RUN \"<<NOHEREDOC\""), Vec::<String>::new());
        assert_eq!(names("RUN echo 'unclosed <<EOF"), Vec::<String>::new());
        assert_eq!(names("RUN cat <<'one two'"), ["one two"]);
    }
}
