//! The parser's tests: our own cases written after BuildKit's parser test suite
//! (`frontend/dockerfile/parser/testfiles*`, the heredoc tests, `instructions/parse_test.go`),
//! and every Dockerfile of the shared conformance cases.

use std::collections::BTreeMap;

use super::*;
use crate::shell_words::Lexer;

/// A compact rendering of a command for the expectations below.
fn dump(c: &Command) -> String {
    let cmdline = |c: &CommandLine| match c {
        CommandLine::Shell(s) => format!("{s:?}"),
        CommandLine::Exec(v) => format!("{v:?}"),
    };
    let kvs = |kvs: &[KeyValue]| {
        kvs.iter()
            .map(|kv| format!("{:?}={:?}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let copy = |c: &Copy| {
        let mut s = String::new();
        for (flag, v) in [("from", &c.from), ("chown", &c.chown), ("chmod", &c.chmod)] {
            if let Some(v) = v {
                s += &format!("--{flag}={v} ");
            }
        }
        if let Some(v) = &c.checksum {
            s += &format!("--checksum={v} ");
        }
        if c.link {
            s += "--link ";
        }
        for e in &c.excludes {
            s += &format!("--exclude={e} ");
        }
        for src in &c.sources {
            match src {
                Source::Path(p) => s += &format!("{p:?} "),
                Source::Heredoc(d) => s += &format!("<<{}:{:?} ", d.name, d.body),
            }
        }
        s + &format!("{:?}", c.dest)
    };
    let body = match c {
        Command::From(f) => {
            let mut s = String::new();
            if let Some(p) = &f.platform {
                s += &format!("--platform={p} ");
            }
            s += &format!("{:?}", f.image);
            if let Some(n) = &f.stage_name {
                s += &format!(" as {n:?}");
            }
            s
        }
        Command::Run(r) => {
            let mut s = String::new();
            for m in &r.mounts {
                s += &format!("--mount={m} ");
            }
            if let Some(n) = r.network {
                s += &format!("--network={n:?} ");
            }
            s + &cmdline(&r.command)
        }
        Command::Cmd(c) | Command::Entrypoint(c) => cmdline(c),
        Command::Env(k) | Command::Label(k) => kvs(k),
        Command::Arg(args) => args
            .iter()
            .map(|a| match &a.default {
                Some(d) => format!("{:?}={d:?}", a.name),
                None => format!("{:?}", a.name),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Command::Expose(v) | Command::Volume(v) | Command::Shell(v) => format!("{v:?}"),
        Command::User(s)
        | Command::Workdir(s)
        | Command::StopSignal(s)
        | Command::Maintainer(s) => {
            format!("{s:?}")
        }
        Command::Copy(c) | Command::Add(c) => copy(c),
        Command::Healthcheck(h) => format!(
            "{:?} interval={} timeout={} start={} start-interval={} retries={}",
            h.test, h.interval, h.timeout, h.start_period, h.start_interval, h.retries
        ),
        Command::Onbuild(o) => format!("({})", dump(&o.instruction.command)),
    };
    format!("{} {body}", c.keyword().to_ascii_lowercase())
}

fn dumps(text: &str) -> Vec<String> {
    let df = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    df.instructions.iter().map(|i| dump(&i.command)).collect()
}

fn error(text: &str) -> ParseError {
    match parse(text) {
        Ok(df) => panic!("should not parse: {text:?}\n{df:#?}"),
        Err(e) => e,
    }
}

#[test]
fn copy_and_add_lists_and_json() {
    let text = "FROM\tubuntu:14.04\nLABEL\tmaintainer\tSeongyeol Lim <seongyeol37@gmail.com>\n\n\
        COPY\t.\t/go/src/github.com/docker/docker\nADD\t\t.\t/\nADD\t\tnull /\nCOPY\tnullfile /tmp\n\
        ADD\t\t[ \"vimrc\", \"/tmp\" ]\nCOPY\t[ \"bashrc\", \"/tmp\" ]\nCOPY\t[ \"test file\", \"/tmp\" ]\n\
        ADD\t\t[ \"test file\", \"/tmp/test file\" ]\n";
    assert_eq!(
        dumps(text),
        [
            r#"from "ubuntu:14.04""#,
            r#"label "maintainer"="Seongyeol Lim <seongyeol37@gmail.com>""#,
            r#"copy "." "/go/src/github.com/docker/docker""#,
            r#"add "." "/""#,
            r#"add "null" "/""#,
            r#"copy "nullfile" "/tmp""#,
            r#"add "vimrc" "/tmp""#,
            r#"copy "bashrc" "/tmp""#,
            r#"copy "test file" "/tmp""#,
            r#"add "test file" "/tmp/test file""#,
        ]
    );
}

#[test]
fn args_keep_quotes_until_expansion() {
    assert_eq!(
        dumps("ARG foo bar=baz\nFROM ubuntu\nARG abc=\"123 456\" def\n"),
        [
            r#"arg "foo" "bar"="baz""#,
            r#"from "ubuntu""#,
            r#"arg "abc"="\"123 456\"" "def""#,
        ]
    );
    assert!(
        error("FROM a\nARG =x")
            .to_string()
            .contains("ARG names can not be blank")
    );
}

#[test]
fn continuation_at_the_end_of_the_file() {
    assert_eq!(
        dumps("FROM alpine:3.5\n\nRUN something \\"),
        [r#"from "alpine:3.5""#, r#"run "something""#]
    );
}

#[test]
fn env_forms() {
    let text = r#"FROM ubuntu
ENV name value
ENV name=value
ENV name=value name2=value2
ENV name="value value1"
ENV name=value\ value2
ENV name="value'quote space'value2"
ENV name='value"double quote"value2'
ENV name=value\ value2 name2=value2\ value3
ENV name="a\"b"
ENV name="a\'b"
ENV name='a\'b'
ENV name='a\'b''
ENV name='a\"b'
ENV name="''"
# the next instruction must be last and end with a continuation
ENV name=value \
    name1=value1 \
    name2="value2a \
           value2b" \
    name3="value3a\n\"value3b\"" \
	name4="value4a\\nvalue4b" \
"#;
    assert_eq!(
        dumps(text)[1..],
        [
            r#"env "name"="value""#,
            r#"env "name"="value""#,
            r#"env "name"="value" "name2"="value2""#,
            r#"env "name"="\"value value1\"""#,
            r#"env "name"="value\\ value2""#,
            r#"env "name"="\"value'quote space'value2\"""#,
            r#"env "name"="'value\"double quote\"value2'""#,
            r#"env "name"="value\\ value2" "name2"="value2\\ value3""#,
            r#"env "name"="\"a\\\"b\"""#,
            r#"env "name"="\"a\\'b\"""#,
            r#"env "name"="'a\\'b'""#,
            r#"env "name"="'a\\'b''""#,
            r#"env "name"="'a\\\"b'""#,
            r#"env "name"="\"''\"""#,
            r#"env "name"="value" "name1"="value1" "name2"="\"value2a            value2b\"" "name3"="\"value3a\\n\\\"value3b\\\"\"" "name4"="\"value4a\\\\nvalue4b\"""#,
        ]
    );
    // ENV values as the executor will see them after expansion.
    let df = parse(text).unwrap();
    let lexer = df.lexer();
    let none = BTreeMap::new();
    let values = |i: usize| -> Result<Vec<String>, crate::shell_words::ExpandError> {
        match df.instructions[i].command.expand(&lexer, &none)? {
            Command::Env(kvs) => Ok(kvs.into_iter().map(|kv| kv.value).collect()),
            _ => unreachable!(),
        }
    };
    assert_eq!(values(4).unwrap(), ["value value1"]);
    assert_eq!(values(5).unwrap(), ["value value2"]);
    assert_eq!(values(6).unwrap(), ["value'quote space'value2"]);
    assert_eq!(values(7).unwrap(), ["value\"double quote\"value2"]);
    assert_eq!(values(8).unwrap(), ["value value2", "value2 value3"]);
    assert_eq!(values(9).unwrap(), ["a\"b"]);
    assert_eq!(values(10).unwrap(), ["a\\'b"]);
    assert_eq!(values(13).unwrap(), ["a\\\"b"]);
    assert_eq!(values(14).unwrap(), ["''"]);
    assert_eq!(
        values(15).unwrap(),
        [
            "value",
            "value1",
            "value2a            value2b",
            "value3a\\n\"value3b\"",
            "value4a\\nvalue4b"
        ]
    );
    // In single quotes nothing is escaped: 'a\'b' leaves a quote open, as in docker.
    assert!(values(11).is_err());
    assert_eq!(values(12).unwrap(), ["a\\b"]);
}

#[test]
fn escape_directive() {
    let cases = [
        // a comment first: the directive is only a comment, `\` stays the escape
        "# Comment here.\n# escape = `\n\nFROM image\nLABEL maintainer foo@bar.com\nENV GOPATH \\\n\\go",
        "# escape = `\n# no blank line after the directives\nFROM image\nLABEL maintainer foo@bar.com\nENV GOPATH `\n\\go\n",
        "#escape = `\n\nFROM image\nLABEL maintainer foo@bar.com\nENV GOPATH `\n\\go",
    ];
    for text in cases {
        assert_eq!(
            dumps(text),
            [
                r#"from "image""#,
                r#"label "maintainer"="foo@bar.com""#,
                r#"env "GOPATH"="\\go""#,
            ],
            "{text}"
        );
    }
    let df = parse("# syntax = docker/dockerfile\n# escape = `\n\nFROM `\n    image\n").unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile"));
    assert_eq!(dump(&df.instructions[0].command), r#"from "image""#);
}

#[test]
fn escapes_stay_in_shell_forms() {
    let text = r#"FROM ubuntu:14.04
LABEL maintainer Erik \\Hollensbe <erik@hollensbe.org>\"

RUN apt-get \update && \
  apt-get \"install znc -y
ADD \conf\\" /.znc

RUN foo \

bar \

baz

CMD [ "\/usr\\\"/bin/znc", "-f", "-r" ]
"#;
    assert_eq!(
        dumps(text),
        [
            r#"from "ubuntu:14.04""#,
            r#"label "maintainer"="Erik \\\\Hollensbe <erik@hollensbe.org>\\\"""#,
            r#"run "apt-get \\update &&   apt-get \\\"install znc -y""#,
            r#"add "\\conf\\\\\"" "/.znc""#,
            r#"run "foo bar baz""#,
            r#"cmd ["/usr\\\"/bin/znc", "-f", "-r"]"#,
        ]
    );
    let df = parse(text).unwrap();
    assert_eq!(df.warnings.len(), 1, "{:?}", df.warnings);
}

#[test]
fn flags_are_checked() {
    assert_eq!(
        dumps("FROM scratch\nCOPY -- foo /tmp/\nCOPY --link=false --from=0 foo /tmp/"),
        [
            r#"from "scratch""#,
            r#"copy "foo" "/tmp/""#,
            r#"copy --from=0 "foo" "/tmp/""#,
        ]
    );
    let e = error("FROM scratch\nCOPY --user=me foo /tmp/");
    assert_eq!(e.location.start, 2);
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownFlag {
            flag: "user".into(),
            instruction: "COPY".into(),
            accepted: "--from, --chown, --chmod, --link, --exclude".into()
        }
    );
    assert!(
        e.to_string().contains("unknown flag --user for COPY"),
        "{e}"
    );
    assert!(
        error("FROM a\nCMD --doit [ \"a\", \"b\" ]")
            .to_string()
            .contains("--doit")
    );
    assert!(
        error("FROM a\nMAINTAINER --boo joe@example.com")
            .to_string()
            .contains("--boo")
    );
    assert!(
        error("FROM a\nCOPY --from=a --from=b x y")
            .to_string()
            .contains("duplicate flag")
    );
    assert!(
        error("FROM a\nCOPY --from x y")
            .to_string()
            .contains("missing a value")
    );
    assert!(
        error("FROM a\nCOPY --link=yes x y")
            .to_string()
            .contains("boolean")
    );
    assert!(
        error("FROM a\nRUN --network=bridge true")
            .to_string()
            .contains("--network")
    );
    let e = error("FROM a\nCOPY --parents a/b /x");
    assert_eq!(
        e.to_string(),
        "line 2: COPY --parents is not supported by strata (COPY --parents a/b /x)"
    );
    assert!(
        error("FROM a\nADD --from=x a b")
            .to_string()
            .contains("unknown flag --from for ADD")
    );
    assert!(
        error("FROM a\nCOPY --checksum=sha256:00 a b")
            .to_string()
            .contains("--checksum")
    );
}

#[test]
fn run_flags() {
    let df = parse("FROM a\nRUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t --network=none --security=insecure make\n").unwrap();
    let Command::Run(run) = &df.instructions[1].command else {
        panic!()
    };
    assert_eq!(
        run.mounts,
        ["type=cache,target=/root/.cache", "type=tmpfs,target=/t"]
    );
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.security, Some(SecurityMode::Insecure));
    assert_eq!(run.command, CommandLine::Shell("make".into()));
}

#[test]
fn healthchecks() {
    let text = "FROM debian\nADD check.sh main.sh /app/\nCMD /app/main.sh\n\
        HEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet\n\
        HEALTHCHECK   CMD   a b\nHEALTHCHECK --timeout=3s CMD [\"foo\"]\n\
        HEALTHCHECK --start-period=0s --start-interval=0s --interval=5s --timeout=0s --retries=0 CMD [\"foo\"]\n\
        HEALTHCHECK none\nHEALTHCHECK --interval=1m30s --start-interval=500ms cmd true\n";
    assert_eq!(
        dumps(text)[3..],
        [
            r#"healthcheck ["CMD-SHELL", "/app/check.sh --quiet"] interval=5000000000 timeout=3000000000 start=0 start-interval=0 retries=3"#,
            r#"healthcheck ["CMD-SHELL", "a b"] interval=0 timeout=0 start=0 start-interval=0 retries=0"#,
            r#"healthcheck ["CMD", "foo"] interval=0 timeout=3000000000 start=0 start-interval=0 retries=0"#,
            r#"healthcheck ["CMD", "foo"] interval=5000000000 timeout=0 start=0 start-interval=0 retries=0"#,
            r#"healthcheck ["NONE"] interval=0 timeout=0 start=0 start-interval=0 retries=0"#,
            r#"healthcheck ["CMD-SHELL", "true"] interval=90000000000 timeout=0 start=0 start-interval=500000000 retries=0"#,
        ]
    );
    for (bad, says) in [
        ("HEALTHCHECK", "requires at least one argument"),
        ("HEALTHCHECK CMD", "missing command"),
        ("HEALTHCHECK CMD []", "missing command"),
        ("HEALTHCHECK CONNECT TCP 7000", "unknown type \"CONNECT\""),
        ("HEALTHCHECK NONE x", "takes no arguments"),
        ("HEALTHCHECK --interval=5s NONE", "unknown flag --interval"),
        (
            "HEALTHCHECK --interval=50ns CMD true",
            "cannot be less than 1ms",
        ),
        ("HEALTHCHECK --interval=5 CMD true", "not a duration"),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries"),
        ("HEALTHCHECK --foo=1 CMD true", "unknown flag --foo"),
    ] {
        let e = error(&format!("FROM a\n{bad}"));
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[test]
fn json_and_its_fallbacks() {
    let text = "FROM a\nCMD []\nCMD [\"\"]\nCMD [\"a\"]\nCMD [\"a\",\"b\"]\nCMD [ \"a\", \"b\" ]\n\
        CMD [\t\"a\",\t\"b\"\t]\nCMD\t[\t\"a\",\t\"b\"\t]\t\n\
        CMD [\"abc 123\", \"♥\", \"☃\", \"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000\"]\n";
    assert_eq!(
        dumps(text)[1..],
        [
            "cmd []",
            r#"cmd [""]"#,
            r#"cmd ["a"]"#,
            r#"cmd ["a", "b"]"#,
            r#"cmd ["a", "b"]"#,
            r#"cmd ["a", "b"]"#,
            r#"cmd ["a", "b"]"#,
            r#"cmd ["abc 123", "♥", "☃", "\" \\ / \u{8} \u{c} \n \r \t \0"]"#,
        ]
    );
    // Not JSON: the shell form, as written.
    let text = "FROM a\n\
        CMD \"[\\\"echo\\\", \\\"Phew, I just managed to escaped those double quotes\\\"]\"\n\
        CMD '[\"echo\", \"Well, JSON in a string is JSON too?\"]'\n\
        CMD ['echo','single quotes are invalid JSON']\n\
        CMD [\"echo\", \"Please, close the brackets when you're done\"\n\
        CMD [\"echo\", \"look ma, no quote!]\n";
    assert_eq!(
        dumps(text)[1..],
        [
            r#"cmd "\"[\\\"echo\\\", \\\"Phew, I just managed to escaped those double quotes\\\"]\"""#,
            r#"cmd "'[\"echo\", \"Well, JSON in a string is JSON too?\"]'""#,
            r#"cmd "['echo','single quotes are invalid JSON']""#,
            r#"cmd "[\"echo\", \"Please, close the brackets when you're done\"""#,
            r#"cmd "[\"echo\", \"look ma, no quote!]""#,
        ]
    );
    let e = error("FROM a\nCMD [ \"echo\", [ \"nested json\" ] ]");
    assert!(e.to_string().contains("strings only"), "{e}");
    assert!(
        error("FROM a\nSHELL /bin/sh -c")
            .to_string()
            .contains("JSON")
    );
    assert!(
        error("FROM a\nSHELL []")
            .to_string()
            .contains("at least one")
    );
}

#[test]
fn the_edge_case_generator() {
    let text = r#"FROM busybox:buildroot-2014.02

LABEL maintainer docker <docker@docker.io>

ONBUILD RUN ["echo", "test"]
ONBUILD RUN echo test
ONBUILD COPY . /


# RUN Commands \
# linebreak in comment \
RUN ["ls", "-la"]
RUN ["echo", "'1234'"]
RUN echo "1234"
RUN echo 1234
RUN echo '1234' && \
    echo "456" && \
    echo 789
RUN    sh -c 'echo root:testpass \
        > /tmp/passwd'
RUN mkdir -p /test /test2 /test3/test

# ENV \
ENV SCUBA 1 DUBA 3
ENV SCUBA "1 DUBA 3"

# CMD \
CMD ["echo", "test"]
CMD echo test
CMD echo "test"
CMD echo 'test'
CMD echo 'test' | wc -

#EXPOSE\
EXPOSE 3000
EXPOSE 9000 5000 6000

USER docker
USER docker:root

VOLUME ["/test"]
VOLUME ["/test", "/test2"]
VOLUME /test3

WORKDIR /test

ADD . /
COPY . copy
"#;
    assert_eq!(
        dumps(text),
        [
            r#"from "busybox:buildroot-2014.02""#,
            r#"label "maintainer"="docker <docker@docker.io>""#,
            r#"onbuild (run ["echo", "test"])"#,
            r#"onbuild (run "echo test")"#,
            r#"onbuild (copy "." "/")"#,
            r#"run ["ls", "-la"]"#,
            r#"run ["echo", "'1234'"]"#,
            r#"run "echo \"1234\"""#,
            r#"run "echo 1234""#,
            r#"run "echo '1234' &&     echo \"456\" &&     echo 789""#,
            r#"run "sh -c 'echo root:testpass         > /tmp/passwd'""#,
            r#"run "mkdir -p /test /test2 /test3/test""#,
            r#"env "SCUBA"="1 DUBA 3""#,
            r#"env "SCUBA"="\"1 DUBA 3\"""#,
            r#"cmd ["echo", "test"]"#,
            r#"cmd "echo test""#,
            r#"cmd "echo \"test\"""#,
            r#"cmd "echo 'test'""#,
            r#"cmd "echo 'test' | wc -""#,
            r#"expose ["3000"]"#,
            r#"expose ["9000", "5000", "6000"]"#,
            r#"user "docker""#,
            r#"user "docker:root""#,
            r#"volume ["/test"]"#,
            r#"volume ["/test", "/test2"]"#,
            r#"volume ["/test3"]"#,
            r#"workdir "/test""#,
            r#"add "." "/""#,
            r#"copy "." "copy""#,
        ]
    );
}

#[test]
fn tabs_and_blank_lines_in_long_continuations() {
    let text = "#escape=\\\nFROM brimstone/ubuntu:14.04\n\nENV GOPATH /go\n\
        RUN apt-get update \\\n\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\
        \x20   && apt-get clean \\\n\n\t&& rm -rf $GOPATH\n";
    assert_eq!(
        dumps(text)[2],
        r#"run "apt-get update \t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean     && apt-get clean \t&& rm -rf $GOPATH""#
    );
}

#[test]
fn line_numbers() {
    // After BuildKit's testfile-line: instructions at lines 5, 11-12 and 17-31.
    let text = "# ESCAPE=\\\n\n\n\nFROM brimstone/ubuntu:14.04\n\n\n# TORUN -v /var/run/docker.sock:/var/run/docker.sock\n\n\n\
        ENV GOPATH \\\n/go\n\n\n\n# Install the packages we need, clean up after them and us\n\
        RUN apt-get update \\\n\t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.clean \\\n\n\n\
        \x20   && apt-get --no-install-recommends install -y git golang ca-certificates \\\n\
        \x20   && apt-get clean \\\n    && rm -rf /var/lib/apt/lists \\\n\n\
        \t&& go get -v github.com/brimstone/consuldock \\\n\
        \x20   && mv $GOPATH/bin/consuldock /usr/local/bin/consuldock \\\n\n\
        \t&& dpkg -l | awk '/^ii/ {print $2}' > /tmp/dpkg.dirty \\\n\
        \t&& apt-get remove --purge -y $(diff /tmp/dpkg.clean /tmp/dpkg.dirty | awk '/^>/ {print $2}') \\\n\
        \t&& rm /tmp/dpkg.* \\\n\t&& rm -rf $GOPATH\n\n\n\n";
    let df = parse(text).unwrap();
    let locations: Vec<(usize, usize)> = df
        .instructions
        .iter()
        .map(|i| (i.location.start, i.location.end))
        .collect();
    assert_eq!(locations, [(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn negative_cases() {
    assert_eq!(error("").kind, ParseErrorKind::NoStages);
    assert_eq!(
        error("# Hello\n# These are just comments\n\n").kind,
        ParseErrorKind::NoStages
    );
    assert_eq!(error("ARG A=1\n").kind, ParseErrorKind::NoStages);
    let e = error("FROM busybox\n\nENV PATH");
    assert_eq!(e.location.start, 3);
    assert!(e.to_string().contains("ENV must have two arguments"), "{e}");
    for (text, says) in [
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("USER", "USER requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("ENV", "ENV requires at least one argument"),
        ("LABEL", "LABEL requires at least one argument"),
        ("ONBUILD", "ONBUILD requires an instruction"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ("VOLUME [\"\"]", "can not be empty"),
        ("ARG", "ARG requires at least one argument"),
        ("ADD arg1", "ADD requires at least two arguments"),
        ("COPY arg1", "COPY requires at least two arguments"),
        (
            "COPY\t\n\t\tquux \\\n      bar",
            "COPY requires at least two arguments",
        ),
        (
            "ONBUILD FROM scratch",
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "ONBUILD MAINTAINER me",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        ("ONBUILD ONBUILD RUN touch foobar", "chaining ONBUILD"),
        ("ONBUILD --x RUN true", "unknown flag --x for ONBUILD"),
        ("RUN", "RUN requires a command"),
        ("CMD", "CMD requires a command"),
        ("ENTRYPOINT", "ENTRYPOINT requires a command"),
        ("ENV a=b c", "can't find = in \"c\""),
        ("LABEL =x", "LABEL names can not be blank"),
        ("FROM a b", "FROM takes an image"),
        ("FROM a AS 1st", "invalid stage name \"1st\""),
        (
            "COPY <<EOF <<EOF2\nx\nEOF\ny\nEOF2\n",
            "heredoc as a destination",
        ),
        ("RUN <<EOF\nnever ends\n", "unterminated heredoc"),
    ] {
        let e = error(&format!("FROM a\n{text}"));
        assert_eq!(e.location.start, 2, "{text}: {e}");
        assert!(e.to_string().contains(says), "{text}: {e}");
    }
}

#[test]
fn unknown_instructions_name_themselves_and_their_line() {
    let e = error("FROM busybox\nFROBNICATE now\n");
    assert_eq!(
        e.kind,
        ParseErrorKind::UnknownInstruction("FROBNICATE".into())
    );
    assert_eq!(e.location, Location::line(2));
    assert_eq!(
        e.to_string(),
        "line 2: unknown instruction FROBNICATE (FROBNICATE now)"
    );
    assert_eq!(
        e.in_file("Dockerfile").to_string(),
        "Dockerfile:2: unknown instruction FROBNICATE (FROBNICATE now)"
    );
    assert!(
        error("FROM a\nfoo bar")
            .to_string()
            .contains("unknown instruction foo")
    );
    let long = format!("FROM a\nRUN {}", "x".repeat(300));
    let e = error(&format!("{long}\nNOPE"));
    assert_eq!(e.location.start, 3);
    let e = error(&format!("FROM a\nRUN --bad {}", "y".repeat(300)));
    assert!(e.to_string().ends_with("…)"), "{e}");
}

#[test]
fn instructions_before_from() {
    let e = error("RUN true");
    assert_eq!(e.kind, ParseErrorKind::NoFrom("RUN".into()));
    assert!(e.to_string().contains("FROM"), "{e}");
    let e = error("ARG A\n# c\nenv X=1\nFROM a");
    assert_eq!(
        (e.kind, e.location.start),
        (ParseErrorKind::NoFrom("ENV".into()), 3)
    );
    assert!(parse("ARG A=1\nARG B\nFROM a").is_ok());
}

#[test]
fn keywords_in_any_case() {
    assert_eq!(
        dumps("from a AS Build\nrun true\nEnv X=1\ncopy a b"),
        [
            r#"from "a" as "build""#,
            r#"run "true""#,
            r#"env "X"="1""#,
            r#"copy "a" "b""#,
        ]
    );
}

/// (name, body, expand, strip_tabs, fd) of each heredoc.
type HeredocFields = (String, String, bool, bool, Option<u32>);

fn heredocs(text: &str) -> Vec<Vec<HeredocFields>> {
    let df = parse(text).unwrap_or_else(|e| panic!("{e}"));
    df.instructions
        .iter()
        .map(|i| {
            let docs: Vec<&Heredoc> = match &i.command {
                Command::Run(r) => r.heredocs.iter().collect(),
                Command::Copy(c) | Command::Add(c) => c
                    .sources
                    .iter()
                    .filter_map(|s| match s {
                        Source::Heredoc(d) => Some(d),
                        Source::Path(_) => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            docs.into_iter()
                .map(|d| (d.name.clone(), d.body.clone(), d.expand, d.strip_tabs, d.fd))
                .collect()
        })
        .collect()
}

#[test]
fn heredoc_extraction() {
    let text = "FROM alpine:3.6\n\nRUN <<EMPTY\nEMPTY\n\nRUN 3<<EMPTY2\nEMPTY2\n\nRUN \"<<NOHEREDOC\"\n\n\
        RUN <<INDENT\n\tfoo\n\tbar\nINDENT\n\nRUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n\n\
        RUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n\nRUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n\n\
        RUN <<COMMENT\n# internal comment\necho hello world\necho foo bar # trailing comment\nCOMMENT\n\n\
        RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n\n\
        COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n\n\
        COPY <<X <<Y /dest\nY\nX\nX\nY\n\nRUN <<COMPLEX python3\nprint('hello world')\nCOMPLEX\n\n\
        COPY <<file.txt /dest\nhello world\nfile.txt\n\nRUN <<eo'f'\necho foo\neof\n\n\
        RUN <<eo\\'f\necho foo\neo'f\n\nRUN <<'e'o\\'f\necho foo\neo'f\n\nRUN <<'one two'\necho bar\none two\n\n\
        RUN <<$EOF\n$EOF\n\nRUN <<  EOF\nEOF\n\nRUN <<  EOF  > foo\nEOF\n\nRUN [\"<<EOF\"]\n";
    let doc = |name: &str, body: &str, expand: bool, strip: bool, fd: Option<u32>| {
        (name.to_owned(), body.to_owned(), expand, strip, fd)
    };
    let got = heredocs(text);
    let want = vec![
        vec![],
        vec![doc("EMPTY", "", true, false, None)],
        vec![doc("EMPTY2", "", true, false, Some(3))],
        vec![],
        vec![doc("INDENT", "\tfoo\n\tbar\n", true, false, None)],
        vec![doc("UNINDENT", "\tbaz\n\tquux\n", true, true, None)],
        vec![doc("UNINDENT2", "\tbaz\n\tquux\n", true, true, None)],
        vec![doc("NOEXPAND", "\tdon't expand $NAME\n", false, true, None)],
        vec![doc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            None,
        )],
        vec![doc("MOUNT", "echo hello\n", true, false, None)],
        vec![
            doc("FILE1", "content 1\n", true, false, None),
            doc("FILE2", "content 2\n", true, false, None),
        ],
        vec![
            doc("X", "Y\n", true, false, None),
            doc("Y", "X\n", true, false, None),
        ],
        vec![doc("COMPLEX", "print('hello world')\n", true, false, None)],
        vec![doc("file.txt", "hello world\n", true, false, None)],
        vec![doc("eof", "echo foo\n", false, false, None)],
        vec![doc("eo'f", "echo foo\n", true, false, None)],
        vec![doc("eo'f", "echo foo\n", false, false, None)],
        vec![doc("one two", "echo bar\n", false, false, None)],
        vec![doc("$EOF", "", true, false, None)],
        vec![doc("EOF", "", true, false, None)],
        vec![doc("EOF", "", true, false, None)],
        vec![],
    ];
    assert_eq!(got, want);
    let df = parse(text).unwrap();
    let unindent = &df.instructions[5];
    assert_eq!(unindent.location, Location { start: 16, end: 19 });
    let Command::Run(run) = &unindent.command else {
        panic!()
    };
    assert_eq!(run.heredocs[0].text(), "baz\nquux\n");
}

#[test]
fn run_scripts() {
    let run = |text: &str| {
        let df = parse(&format!("FROM a\n{text}")).unwrap();
        match &df.instructions[1].command {
            Command::Run(r) => r.clone(),
            _ => unreachable!(),
        }
    };
    let r = run("RUN echo hi");
    assert_eq!(r.shell_script(), Some(RunScript::Shell("echo hi".into())));
    let r = run("RUN [\"echo\", \"hi\"]");
    assert_eq!(r.shell_script(), None);
    let r = run("RUN <<-EOF\n\tset -e\n\techo one\n\tEOF\n");
    assert_eq!(
        r.shell_script(),
        Some(RunScript::Shell("set -e\necho one\n".into()))
    );
    let r = run("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
    assert_eq!(
        r.shell_script(),
        Some(RunScript::Executable {
            name: "EOF",
            body: "#!/usr/bin/env python3\nprint(1)\n".into()
        })
    );
    let r = run("RUN python3 <<EOF > /out\nprint(1)\nEOF\n");
    assert_eq!(
        r.shell_script(),
        Some(RunScript::Shell(
            "python3 <<EOF > /out\nprint(1)\nEOF".into()
        ))
    );
    let r = run("RUN cat <<A <<-B\na\nA\n\tb\n\tB\n");
    assert_eq!(
        r.shell_script(),
        Some(RunScript::Shell("cat <<A <<-B\na\nA\n\tb\nB".into()))
    );
}

#[test]
fn onbuild_triggers() {
    let text = "FROM a\nONBUILD RUN echo hi\nonbuild  copy --chown=1:1 . /app\nONBUILD RUN <<EOF\necho from heredoc\nEOF\n";
    let df = parse(text).unwrap();
    let triggers: Vec<&str> = df.instructions[1..]
        .iter()
        .map(|i| match &i.command {
            Command::Onbuild(o) => o.trigger.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        triggers,
        [
            "RUN echo hi",
            "copy --chown=1:1 . /app",
            "RUN <<EOF\necho from heredoc\nEOF"
        ]
    );
    // Each trigger parses back to the instruction it came from.
    for i in &df.instructions[1..] {
        let Command::Onbuild(o) = &i.command else {
            unreachable!()
        };
        let back = parse_trigger(&o.trigger).unwrap();
        assert_eq!(back.command, o.instruction.command, "{}", o.trigger);
    }
    assert_eq!(df.instructions[3].location, Location { start: 4, end: 6 });
    assert!(parse_trigger("FROM x").is_err());
    assert!(parse_trigger("RUN a\nRUN b").is_err());
    assert!(parse_trigger("").is_err());
    assert!(parse_trigger("NOPE x").is_err());
}

#[test]
fn expansion_where_docker_expands() {
    let text = r#"FROM ${BASE:-busybox} AS b
ENV A=$V B="x y" C=${UNSET:-fallback} D=${V:+set} E=\$literal
ENV F ${A}-old-form
RUN echo $V "${V}"
CMD echo $V
EXPOSE $PORTS 53/udp
VOLUME $DIR /b
USER ${U}:${G:-0}
WORKDIR $DIR/sub
STOPSIGNAL $SIG
LABEL "$V"="${V} label"
COPY --chown=$U:$U --chmod=${MODE} --from=$V $DIR/*.txt /$DIR/
ADD --checksum=$SUM http://x/$V.tgz /
COPY <<EOF <<'RAW' /etc/
v=$V "quoted" \$not
EOF
v=$V
RAW
HEALTHCHECK CMD echo $V
ONBUILD RUN echo $V
MAINTAINER $V
"#;
    let df = parse(text).unwrap();
    let vars: BTreeMap<String, String> = [
        ("V", "val"),
        ("A", "val"),
        ("PORTS", "80 443/tcp"),
        ("DIR", "/data"),
        ("U", "app"),
        ("MODE", "0755"),
        ("SIG", "SIGTERM"),
        ("SUM", "sha256:abc"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let lexer = df.lexer();
    let expanded: Vec<String> = df
        .instructions
        .iter()
        .map(|i| dump(&i.command.expand(&lexer, &vars).unwrap()))
        .collect();
    assert_eq!(
        expanded,
        [
            r#"from "busybox" as "b""#,
            r#"env "A"="val" "B"="x y" "C"="fallback" "D"="set" "E"="$literal""#,
            r#"env "F"="val-old-form""#,
            r#"run "echo $V \"${V}\"""#,
            r#"cmd "echo $V""#,
            r#"expose ["80", "443/tcp", "53/udp"]"#,
            r#"volume ["/data", "/b"]"#,
            r#"user "app:0""#,
            r#"workdir "/data/sub""#,
            r#"stopsignal "SIGTERM""#,
            r#"label "val"="val label""#,
            r#"copy --from=$V --chown=app:app --chmod=0755 "/data/*.txt" "//data/""#,
            r#"add --checksum=sha256:abc "http://x/val.tgz" "/""#,
            r#"copy <<EOF:"v=val \"quoted\" $not\n" <<RAW:"v=$V\n" "/etc/""#,
            r#"healthcheck ["CMD-SHELL", "echo $V"] interval=0 timeout=0 start=0 start-interval=0 retries=0"#,
            r#"onbuild (run "echo $V")"#,
            r#"maintainer "$V""#,
        ]
    );
    let e = parse("FROM a\nWORKDIR ${DIR:?set DIR first}\n")
        .unwrap()
        .instructions[1]
        .command
        .expand(&Lexer::new('\\'), &BTreeMap::new())
        .unwrap_err();
    assert!(e.to_string().contains("DIR: set DIR first"), "{e}");
}

#[test]
fn backtick_escape_expands_too() {
    let df =
        parse("# escape=`\nFROM a\nENV P=\"C:\\dir `$HOME\" Q=`$HOME\nWORKDIR C:\\dir\n").unwrap();
    let lexer = df.lexer();
    let vars = BTreeMap::from([("HOME".to_owned(), "h".to_owned())]);
    let env = df.instructions[1].command.expand(&lexer, &vars).unwrap();
    assert_eq!(dump(&env), r#"env "P"="C:\\dir $HOME" "Q"="$HOME""#);
    let workdir = df.instructions[2].command.expand(&lexer, &vars).unwrap();
    assert_eq!(dump(&workdir), r#"workdir "C:\\dir""#);
}

/// Every Dockerfile of the shared conformance cases parses into the AST it means.
#[test]
fn conformance_dockerfiles() {
    // `shared/conformance` beside the checkout (or beside a parent of a worktree).
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = manifest
        .ancestors()
        .map(|a| a.join("shared/conformance"))
        .find(|d| d.is_dir())
    else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "SKIP conformance_dockerfiles: no shared/conformance beside {} or its parents",
                manifest.display()
            );
        }
        return;
    };
    let want: &[(&str, &[&str])] = &[
        (
            "01-basic-run",
            &[
                r#"from "busybox""#,
                r#"run "echo hi > /hello""#,
                r#"cmd ["cat", "/hello"]"#,
            ],
        ),
        (
            "02-env-arg",
            &[
                r#"arg "BASE"="busybox""#,
                r#"from "${BASE}""#,
                r#"arg "V"="default""#,
                r#"arg "UNUSED""#,
                r#"env "A"="$V" "B"="\"x y\"" "C"="${UNSET:-fallback}" "D"="${V:+set}" "E"="\\$literal""#,
                r#"env "F"="${A}-old-form""#,
                r#"run "echo \"$A|$B|$C|$D|$E|$F|${UNUSED:-none}\" > /out""#,
            ],
        ),
        (
            "03-workdir-user",
            &[
                r#"from "busybox""#,
                r#"workdir "/a/b""#,
                r#"workdir "c""#,
                r#"run "pwd > /pwd && touch created-here""#,
                r#"user "1000:1000""#,
                r#"run "id -u > /tmp/uid""#,
            ],
        ),
        (
            "04-copy-semantics",
            &[
                r#"from "busybox""#,
                r#"copy "a.txt" "/dst/""#,
                r#"copy "dir" "/dcopy""#,
                r#"copy "*.md" "/docs/""#,
                r#"copy --chown=1000:1000 "a.txt" "/owned""#,
                r#"copy --chmod=0750 "a.txt" "/modes""#,
                r#"copy "a.txt" "dir/x" "/multi/""#,
                r#"copy "a.txt" "/renamed.txt""#,
            ],
        ),
        (
            "05-dockerignore",
            &[r#"from "busybox""#, r#"copy "." "/ctx/""#],
        ),
        (
            "06-whiteouts",
            &[
                r#"from "busybox""#,
                r#"run "mkdir -p /d /o && echo 1 > /d/f && echo 2 > /d/g && echo 3 > /o/old""#,
                r#"run "rm /d/f && rm -rf /o && mkdir /o && echo 4 > /o/new""#,
            ],
        ),
        (
            "07-multistage",
            &[
                r#"from "busybox" as "build""#,
                r#"run "mkdir /out && echo built > /out/artifact""#,
                r#"from "busybox" as "unused""#,
                r#"run "exit 1""#,
                r#"from "build" as "test""#,
                r#"run "echo tested > /out/tested""#,
                r#"from "busybox""#,
                r#"copy --from=build "/out/artifact" "/artifact""#,
                r#"copy --from=test "/out/tested" "/tested""#,
                r#"run "test ! -e /out""#,
            ],
        ),
        (
            "08-entrypoint-cmd",
            &[
                r#"from "busybox""#,
                r#"entrypoint ["echo", "ep"]"#,
                r#"cmd ["default"]"#,
            ],
        ),
        (
            "09-metadata",
            &[
                r#"from "busybox""#,
                r#"label "a"="b" "\"c d\""="\"e f\"""#,
                r#"expose ["8080/tcp", "53/udp", "9000"]"#,
                r#"volume ["/data"]"#,
                r#"stopsignal "SIGTERM""#,
                r#"shell ["/bin/sh", "-ec"]"#,
                r#"run "echo \"$0 $-\" > /shell""#,
                r#"healthcheck ["CMD-SHELL", "true"] interval=5000000000 timeout=0 start=0 start-interval=0 retries=0"#,
            ],
        ),
        (
            "10-cache",
            &[
                r#"from "busybox""#,
                r#"arg "STAMP"="one""#,
                r#"run "head -c 16 /dev/urandom | od -An -tx1 > /rand1""#,
                r#"copy "input.txt" "/input.txt""#,
                r#"run "head -c 16 /dev/urandom | od -An -tx1 > /rand2""#,
                r#"run "echo \"$STAMP\" > /stamp && head -c 16 /dev/urandom | od -An -tx1 > /rand3""#,
            ],
        ),
        (
            "11-syntax",
            &[
                r#"from "busybox""#,
                r#"run "echo one     two     three > /continued""#,
                r#"run ["/bin/sh", "-c", "echo exec-form > /exec"]"#,
                r#"run "<<EOT""#,
                r#"copy <<EOF:"key=value\n" "/inline.conf""#,
                r#"env "LOWER"="ok""#,
            ],
        ),
        (
            "12-failures",
            &[r#"from "busybox""#, r#"copy "present.txt" "/present.txt""#],
        ),
        (
            "13-links",
            &[
                r#"from "busybox""#,
                r#"run "mkdir -p /t && echo data > /t/file && ln -s /t/file /abs-link && ln -s t/file /rel-link  && ln /t/file /hard && mkdir -p /p && chmod 4755 /t/file && touch -d '2001-02-03 04:05:06' /t/old""#,
            ],
        ),
        (
            "14-isolation",
            &[
                r#"from "busybox""#,
                r#"run "test \"$(ls /proc | grep -c '^[0-9]')\" -lt 10""#,
                r#"run "hostname > /build-hostname""#,
                r#"run "! mount -t tmpfs none /mnt 2>/dev/null""#,
            ],
        ),
        (
            "15-add-archive",
            &[
                r#"from "busybox""#,
                r#"add "archive.tar.gz" "/opt/""#,
                r#"add "plain.txt" "/plain/""#,
            ],
        ),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        let file = case.join("Dockerfile");
        if !file.is_file() {
            continue;
        }
        let name = case.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let got = dumps(&text);
        let Some((_, expected)) = want.iter().find(|(n, _)| *n == name) else {
            panic!("conformance case {name} has no expectation here: {got:#?}");
        };
        assert_eq!(got, *expected, "{name}");
        seen += 1;
    }
    assert_eq!(seen, want.len(), "every expected case exists");

    // The heredoc RUN of 11-syntax, in detail.
    let text = std::fs::read_to_string(dir.join("11-syntax/Dockerfile")).unwrap();
    let df = parse(&text).unwrap();
    let Command::Run(run) = &df.instructions[3].command else {
        panic!()
    };
    assert_eq!(
        run.shell_script(),
        Some(RunScript::Shell(
            "set -e\necho heredoc-line-1 > /heredoc\necho heredoc-line-2 >> /heredoc\n".into()
        ))
    );
    // The Dockerfiles 12-failures writes at test time.
    assert_eq!(error("FROM busybox\nFROBNICATE now").location.start, 2);
    assert!(matches!(error("RUN true").kind, ParseErrorKind::NoFrom(_)));
    assert!(parse("FROM busybox\nCOPY ../outside /x").is_ok());
}
