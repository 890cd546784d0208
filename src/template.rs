//! The part of Go's `text/template` that `docker inspect --format` users write, over a JSON
//! value: `{{.Id}}`, `{{.Config.Env}}`, `{{json .Config.Labels}}`, `{{index .RepoTags 0}}`,
//! `{{join .Config.Cmd " "}}`, `{{range .RootFS.Layers}}{{println .}}{{end}}`,
//! `{{if .Config.Entrypoint}}…{{else}}…{{end}}`, pipelines (`{{.Config | json}}`) and
//! parentheses. Values print as Go prints them (`[a b]` for a list, `map[k:v]` for a map,
//! `<no value>` for a missing field). Pure: a template and a value in, text or an error that
//! says where out.

use std::fmt::Write as _;

use serde_json::Value;

/// A template that does not parse, or fails on the value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

/// Renders `template` with `.` = `data`.
pub fn render(template: &str, data: &Value) -> Result<String, TemplateError> {
    let fail = |reason: String| TemplateError {
        template: template.to_owned(),
        reason,
    };
    let nodes = parse(template).map_err(fail)?;
    let mut out = String::new();
    run(&nodes, data, &mut out).map_err(fail)?;
    Ok(out)
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    /// `{{pipeline}}`: its value printed.
    Print(Pipeline),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    If(Pipeline, Vec<Node>, Vec<Node>),
}

/// Commands joined by `|`: each one's value is the last argument of the next.
type Pipeline = Vec<Vec<Arg>>;

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.` or `.A.B`: the path from the current value.
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Word(String),
    Sub(Pipeline),
}

// ------------------------------------------------------------------------------------ parse

/// The actions and the text between them, `{{-`/`-}}` trimming the text's whitespace.
fn lex(template: &str) -> Result<Vec<(bool, String)>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "an action `{{` is never closed".to_owned())?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-') {
            trim_next = true;
            action = a;
        }
        pieces.push((false, text.to_owned()));
        pieces.push((true, action.trim().to_owned()));
        rest = &after[end + 2..];
    }
    pieces.push((
        false,
        if trim_next { rest.trim_start() } else { rest }.to_owned(),
    ));
    Ok(pieces)
}

fn parse(template: &str) -> Result<Vec<Node>, String> {
    let pieces = lex(template)?;
    let mut iter = pieces.into_iter();
    let (nodes, end) = parse_block(&mut iter)?;
    match end {
        None => Ok(nodes),
        Some(word) => Err(format!("{{{{{word}}}}} without a range or if")),
    }
}

/// Nodes up to an `{{end}}` or `{{else}}` (returned) or the end of the template (`None`).
fn parse_block(
    iter: &mut impl Iterator<Item = (bool, String)>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some((is_action, text)) = iter.next() {
        if !is_action {
            if !text.is_empty() {
                nodes.push(Node::Text(text));
            }
            continue;
        }
        if text == "end" || text == "else" {
            return Ok((nodes, Some(text)));
        }
        if text.starts_with("/*") {
            continue; // a comment
        }
        let keyword = ["range", "if"]
            .into_iter()
            .find(|k| text.strip_prefix(k).is_some_and(|r| r.starts_with(' ')));
        let Some(keyword) = keyword else {
            nodes.push(Node::Print(parse_pipeline(&text)?));
            continue;
        };
        let pipeline = parse_pipeline(&text[keyword.len()..])?;
        let (body, end) = parse_block(iter)?;
        let otherwise = match end.as_deref() {
            Some("else") => match parse_block(iter)? {
                (nodes, Some(e)) if e == "end" => nodes,
                _ => {
                    return Err(format!(
                        "{{{{{keyword}}}}}…{{{{else}}}} without an {{{{end}}}}"
                    ));
                }
            },
            Some(_) => Vec::new(),
            None => return Err(format!("{{{{{keyword} …}}}} without an {{{{end}}}}")),
        };
        nodes.push(if keyword == "range" {
            Node::Range(pipeline, body, otherwise)
        } else {
            Node::If(pipeline, body, otherwise)
        });
    }
    Ok((nodes, None))
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let pipeline = pipeline_at(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {:?} in {{{{{text}}}}}", tokens[pos]));
    }
    Ok(pipeline)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Pipe,
    Str(String),
    Bare(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' => {
                chars.next();
            }
            '(' | ')' | '|' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Pipe,
                });
            }
            '"' | '`' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("a string in {{{{{text}}}}} is never closed")),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(other) => s.push(other),
                            None => return Err("a string ends in a backslash".to_owned()),
                        },
                        Some(other) => s.push(other),
                    }
                }
                tokens.push(Token::Str(s));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t\n()|\"`".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Bare(word));
            }
        }
    }
    Ok(tokens)
}

fn pipeline_at(tokens: &[Token], pos: &mut usize) -> Result<Pipeline, String> {
    let mut commands = vec![Vec::new()];
    while let Some(token) = tokens.get(*pos) {
        *pos += 1;
        let arg = match token {
            Token::Close => {
                *pos -= 1;
                break;
            }
            Token::Pipe => {
                commands.push(Vec::new());
                continue;
            }
            Token::Open => {
                let sub = pipeline_at(tokens, pos)?;
                if tokens.get(*pos) != Some(&Token::Close) {
                    return Err("a `(` is never closed".to_owned());
                }
                *pos += 1;
                Arg::Sub(sub)
            }
            Token::Str(s) => Arg::Str(s.clone()),
            Token::Bare(w) if w.starts_with('.') => Arg::Field(
                w.split('.')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Token::Bare(w) => match w.parse::<i64>() {
                Ok(n) => Arg::Int(n),
                Err(_) if w.starts_with('$') => {
                    return Err(format!("variables ({w}) are not supported"));
                }
                Err(_) => Arg::Word(w.clone()),
            },
        };
        commands.last_mut().expect("one command at least").push(arg);
    }
    if commands.iter().any(Vec::is_empty) {
        return Err("an empty command in a pipeline".to_owned());
    }
    Ok(commands)
}

// ------------------------------------------------------------------------------------- run

fn run(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(p) => {
                let v = eval(p, dot)?;
                print_go(&v, out);
            }
            Node::If(p, then, otherwise) => {
                let branch = if truthy(&eval(p, dot)?) {
                    then
                } else {
                    otherwise
                };
                run(branch, dot, out)?;
            }
            Node::Range(p, body, otherwise) => {
                let items: Vec<Value> = match eval(p, dot)? {
                    Value::Array(a) => a,
                    Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
                    Value::Null => Vec::new(),
                    other => return Err(format!("range over {}", kind(&other))),
                };
                if items.is_empty() {
                    run(otherwise, dot, out)?;
                }
                for item in &items {
                    run(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval(pipeline: &Pipeline, dot: &Value) -> Result<Value, String> {
    let mut carried: Option<Value> = None;
    for command in pipeline {
        let mut args: Vec<Value> = Vec::new();
        let (head, rest) = command.split_first().expect("commands are not empty");
        for a in rest {
            args.push(arg_value(a, dot)?);
        }
        if let Some(c) = carried.take() {
            args.push(c);
        }
        carried = Some(match head {
            Arg::Word(f) => call(f, &args)?,
            other if args.is_empty() => arg_value(other, dot)?,
            _ => return Err("only a function takes arguments".to_owned()),
        });
    }
    Ok(carried.expect("pipelines are not empty"))
}

fn arg_value(arg: &Arg, dot: &Value) -> Result<Value, String> {
    Ok(match arg {
        Arg::Field(path) => {
            let mut v = dot;
            for name in path {
                v = match v {
                    Value::Object(m) => m.get(name).unwrap_or(&Value::Null),
                    Value::Null => &Value::Null,
                    other => return Err(format!("can't read field {name} of {}", kind(other))),
                };
            }
            v.clone()
        }
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Int(n) => Value::from(*n),
        Arg::Word(w) => call(w, &[])?,
        Arg::Sub(p) => eval(p, dot)?,
    })
}

fn call(function: &str, args: &[Value]) -> Result<Value, String> {
    let one = |args: &[Value]| -> Result<Value, String> {
        match args {
            [v] => Ok(v.clone()),
            _ => Err(format!("{function} takes one argument, not {}", args.len())),
        }
    };
    let text = |v: &Value| {
        let mut s = String::new();
        print_go(v, &mut s);
        s
    };
    Ok(match function {
        "json" => Value::String(one(args)?.to_string()),
        "len" => match one(args)? {
            Value::Array(a) => Value::from(a.len()),
            Value::Object(m) => Value::from(m.len()),
            Value::String(s) => Value::from(s.len()),
            Value::Null => Value::from(0),
            other => return Err(format!("len of {}", kind(&other))),
        },
        "upper" => Value::String(text(&one(args)?).to_uppercase()),
        "lower" => Value::String(text(&one(args)?).to_lowercase()),
        "print" | "println" => {
            let mut s = args.iter().map(text).collect::<Vec<_>>().join(" ");
            if function == "println" {
                s.push('\n');
            }
            Value::String(s)
        }
        "join" => match args {
            [Value::Array(items), Value::String(sep)] => {
                Value::String(items.iter().map(text).collect::<Vec<_>>().join(sep))
            }
            [Value::Null, Value::String(_)] => Value::String(String::new()),
            _ => return Err("join takes a list and a separator string".to_owned()),
        },
        "index" => {
            let (first, keys) = args
                .split_first()
                .ok_or_else(|| "index takes a value and keys".to_owned())?;
            let mut v = first.clone();
            for key in keys {
                v = match (&v, key) {
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().ok_or_else(|| format!("index {n} is negative"))?;
                        a.get(i as usize)
                            .cloned()
                            .ok_or_else(|| format!("index {i} out of range ({} items)", a.len()))?
                    }
                    (Value::Object(m), Value::String(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Null, _) => Value::Null,
                    (v, k) => return Err(format!("can't index {} with {k}", kind(v))),
                };
            }
            v
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// A value as Go's `fmt.Print` shows the equivalent Go value.
fn print_go(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<no value>"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_go(item, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                print_go(item, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn image() -> Value {
        json!({
            "Id": "sha256:abc",
            "RepoTags": ["busybox:latest", "x/y:1"],
            "Config": {
                "Env": ["PATH=/bin", "A=1"],
                "Cmd": ["sh", "-c", "echo hi"],
                "Labels": {"b": "2", "a": "1"},
                "Entrypoint": null,
            },
            "RootFS": {"Type": "layers", "Layers": ["sha256:1", "sha256:2"]},
            "Size": 1234,
        })
    }

    fn ok(t: &str) -> String {
        render(t, &image()).unwrap()
    }

    #[test]
    fn fields_print_as_go_prints_them() {
        assert_eq!(ok("{{.Id}}"), "sha256:abc");
        assert_eq!(ok("id={{ .Id }} size={{.Size}}"), "id=sha256:abc size=1234");
        assert_eq!(ok("{{.Config.Env}}"), "[PATH=/bin A=1]");
        assert_eq!(ok("{{.Config.Labels}}"), "map[a:1 b:2]");
        assert_eq!(ok("{{.Config.Entrypoint}}"), "<no value>");
        assert_eq!(ok("{{.Nope.Deeper}}"), "<no value>");
    }

    #[test]
    fn functions_pipelines_and_parentheses() {
        assert_eq!(ok("{{json .Config.Labels}}"), r#"{"a":"1","b":"2"}"#);
        assert_eq!(
            ok("{{.RootFS.Layers | json}}"),
            r#"["sha256:1","sha256:2"]"#
        );
        assert_eq!(ok("{{index .RepoTags 1}}"), "x/y:1");
        assert_eq!(ok(r#"{{index .Config.Labels "b"}}"#), "2");
        assert_eq!(ok(r#"{{join .Config.Cmd " "}}"#), "sh -c echo hi");
        assert_eq!(ok("{{len .RootFS.Layers}}"), "2");
        assert_eq!(ok("{{upper (index .RepoTags 0)}}"), "BUSYBOX:LATEST");
        assert_eq!(ok("{{json .}}").chars().next(), Some('{'));
    }

    #[test]
    fn range_if_else_and_trimming() {
        assert_eq!(
            ok("{{range .RootFS.Layers}}{{println .}}{{end}}"),
            "sha256:1\nsha256:2\n"
        );
        assert_eq!(ok("{{range .Config.Labels}}[{{.}}]{{end}}"), "[1][2]");
        assert_eq!(
            ok("{{range .Config.Entrypoint}}x{{else}}none{{end}}"),
            "none"
        );
        assert_eq!(
            ok("{{if .Config.Entrypoint}}ep{{else}}cmd: {{.Config.Cmd}}{{end}}"),
            "cmd: [sh -c echo hi]"
        );
        assert_eq!(ok("a  {{- .Size -}}  b"), "a1234b");
        assert_eq!(ok("{{/* a comment */}}x"), "x");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let err = |t: &str| render(t, &image()).unwrap_err().to_string();
        assert!(err("{{.Id").contains("never closed"));
        assert!(err("{{range .RepoTags}}x").contains("without an {{end}}"));
        assert!(err("{{end}}").contains("without a range or if"));
        assert!(err("{{nosuch .Id}}").contains(r#"function "nosuch" not defined"#));
        assert!(err("{{index .RepoTags 5}}").contains("out of range"));
        assert!(err("{{range $i, $t := .RepoTags}}{{end}}").contains("variables"));
        assert!(err("{{.Id.Deeper}}").contains("can't read field Deeper of a string"));
        assert!(err("{{.Id}").contains("{{.Id}"));
    }
}
