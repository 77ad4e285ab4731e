//! A small subset of Prometheus's alert templates (Go `text/template`):
//! enough for labels and annotations such as
//! `{{ $labels.instance }} is at {{ $value | humanizePercentage }}`.
//!
//! Supported inside `{{ }}`: the values `$labels.<name>`, `.Labels.<name>`,
//! `$value`, `.Value`, `$externalURL` and quoted strings; the functions
//! `humanize`, `humanize1024`, `humanizePercentage`, `humanizeDuration`,
//! `toUpper`, `toLower`, `title` and `printf "<format>"` (`%s %v %d %f %.Nf
//! %g %%`), called as `{{ f x }}` or piped as `{{ x | f }}`. Anything else is
//! rejected when the rule is saved, not when it fires.

use std::collections::BTreeMap;

/// What a template can refer to.
pub struct TemplateData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub value: f64,
    pub external_url: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action(Arg, Vec<Func>),
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Label(String),
    Value,
    ExternalUrl,
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    ToUpper,
    ToLower,
    Title,
    Printf(String),
}

enum Val {
    Num(f64),
    Str(String),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Num(v) => crate::query::promql::format_value(*v),
            Val::Str(s) => s.clone(),
        }
    }

    fn num(&self) -> Result<f64, String> {
        match self {
            Val::Num(v) => Ok(*v),
            Val::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a number")),
        }
    }
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {src:?}"))?;
            let inner = after[..close].trim_matches(|c: char| c == '-' || c.is_whitespace());
            parts.push(parse_action(inner)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether the template is plain text.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Expands the template; a function error is written into the output
    /// (as Prometheus does) rather than failing the rule.
    pub fn expand(&self, data: &TemplateData<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(arg, funcs) => {
                    let mut v = match arg {
                        Arg::Label(n) => Val::Str(data.labels.get(n).cloned().unwrap_or_default()),
                        Arg::Value => Val::Num(data.value),
                        Arg::ExternalUrl => Val::Str(data.external_url.to_string()),
                        Arg::Str(s) => Val::Str(s.clone()),
                    };
                    for f in funcs {
                        v = match apply(f, &v) {
                            Ok(v) => v,
                            Err(e) => Val::Str(format!("<error expanding template: {e}>")),
                        };
                    }
                    out.push_str(&v.text());
                }
            }
        }
        out
    }
}

fn parse_arg(s: &str) -> Result<Arg, String> {
    let s = s.trim();
    if let Some(n) = s
        .strip_prefix("$labels.")
        .or_else(|| s.strip_prefix(".Labels."))
    {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid label reference {s:?}"));
        }
        return Ok(Arg::Label(n.to_string()));
    }
    match s {
        "$value" | ".Value" => Ok(Arg::Value),
        "$externalURL" => Ok(Arg::ExternalUrl),
        _ if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') => {
            Ok(Arg::Str(s[1..s.len() - 1].to_string()))
        }
        _ => Err(format!(
            "unsupported template value {s:?} (use $labels.<name>, $value or $externalURL)"
        )),
    }
}

fn parse_func(name: &str, fmt_arg: Option<&str>) -> Result<Func, String> {
    Ok(match name {
        "humanize" => Func::Humanize,
        "humanize1024" => Func::Humanize1024,
        "humanizePercentage" => Func::HumanizePercentage,
        "humanizeDuration" => Func::HumanizeDuration,
        "toUpper" => Func::ToUpper,
        "toLower" => Func::ToLower,
        "title" => Func::Title,
        "printf" => {
            let f = fmt_arg.ok_or("printf needs a quoted format")?;
            match parse_arg(f)? {
                Arg::Str(s) => Func::Printf(s),
                _ => return Err("printf needs a quoted format".into()),
            }
        }
        other => return Err(format!("unsupported template function {other:?}")),
    })
}

/// Splits on whitespace outside double quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_action(inner: &str) -> Result<Part, String> {
    let stages: Vec<&str> = inner.split('|').map(str::trim).collect();
    let first = words(stages[0]);
    let (arg, mut funcs) = match first.as_slice() {
        [a] => (parse_arg(a)?, Vec::new()),
        [f, a] => (parse_arg(a)?, vec![parse_func(f, None)?]),
        [f, fmt, a] if f == "printf" => (parse_arg(a)?, vec![parse_func(f, Some(fmt))?]),
        _ => return Err(format!("unsupported template action {{{{ {inner} }}}}")),
    };
    for st in &stages[1..] {
        let w = words(st);
        match w.as_slice() {
            [f] => funcs.push(parse_func(f, None)?),
            [f, fmt] if f == "printf" => funcs.push(parse_func(f, Some(fmt))?),
            _ => return Err(format!("unsupported template pipeline stage {st:?}")),
        }
    }
    Ok(Part::Action(arg, funcs))
}

fn apply(f: &Func, v: &Val) -> Result<Val, String> {
    Ok(match f {
        Func::Humanize => Val::Str(humanize(v.num()?)),
        Func::Humanize1024 => Val::Str(humanize1024(v.num()?)),
        Func::HumanizePercentage => Val::Str(format!("{}%", fmt_g(v.num()? * 100.0, 4))),
        Func::HumanizeDuration => Val::Str(humanize_duration(v.num()?)),
        Func::ToUpper => Val::Str(v.text().to_uppercase()),
        Func::ToLower => Val::Str(v.text().to_lowercase()),
        Func::Title => Val::Str(
            v.text()
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    match c.next() {
                        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Func::Printf(fmt) => Val::Str(printf(fmt, v)?),
    })
}

/// Go's `%.<prec>g`.
pub fn fmt_g(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return crate::query::promql::format_value(v);
    }
    if v == 0.0 {
        return "0".into();
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return fmt_g(v, 4);
    }
    if v.abs() >= 1.0 {
        let prefixes = ["", "k", "M", "G", "T", "P", "E", "Z", "Y"];
        let mut v = v;
        let mut i = 0;
        while v.abs() >= 1000.0 && i < prefixes.len() - 1 {
            v /= 1000.0;
            i += 1;
        }
        format!("{}{}", fmt_g(v, 4), prefixes[i])
    } else {
        let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut v = v;
        let mut i = 0;
        while v.abs() < 1.0 && i < prefixes.len() - 1 {
            v *= 1000.0;
            i += 1;
        }
        format!("{}{}", fmt_g(v, 4), prefixes[i])
    }
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return fmt_g(v, 4);
    }
    let prefixes = ["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < prefixes.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", fmt_g(v, 4), prefixes[i])
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return fmt_g(v, 4);
    }
    if v.abs() < 1.0 {
        if v == 0.0 {
            return "0s".into();
        }
        return humanize(v) + "s";
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let total = v.abs();
    let secs = total % 60.0;
    let mins = (total / 60.0) as u64 % 60;
    let hours = (total / 3600.0) as u64 % 24;
    let days = (total / 86400.0) as u64;
    let secs_s = fmt_g(secs, 4);
    if days > 0 {
        format!("{sign}{days}d {hours}h {mins}m {secs_s}s")
    } else if hours > 0 {
        format!("{sign}{hours}h {mins}m {secs_s}s")
    } else if mins > 0 {
        format!("{sign}{mins}m {secs_s}s")
    } else {
        format!("{sign}{secs_s}s")
    }
}

fn printf(fmt: &str, v: &Val) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut used = false;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            prec = Some(n.parse().map_err(|_| format!("bad precision in {fmt:?}"))?);
        }
        let verb = chars
            .next()
            .ok_or_else(|| format!("dangling % in {fmt:?}"))?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        if used {
            return Err(format!("{fmt:?} needs more than one argument"));
        }
        used = true;
        match verb {
            's' | 'v' => out.push_str(&v.text()),
            'd' => out.push_str(&format!("{}", v.num()?.trunc() as i64)),
            'f' => out.push_str(&format!("{:.*}", prec.unwrap_or(6), v.num()?)),
            'g' => out.push_str(&match prec {
                Some(p) => fmt_g(v.num()?, p),
                None => crate::query::promql::format_value(v.num()?),
            }),
            other => return Err(format!("unsupported printf verb %{other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> = [("job".to_string(), "api".to_string())].into();
        Template::parse(t).unwrap().expand(&TemplateData {
            labels: &labels,
            value,
            external_url: "http://tern:3000",
        })
    }

    #[test]
    fn expands_labels_values_and_functions() {
        assert_eq!(
            expand("{{ $labels.job }} at {{ $value }}", 0.5),
            "api at 0.5"
        );
        assert_eq!(expand("{{ .Labels.job }}/{{.Value}}", 2.0), "api/2");
        assert_eq!(expand("{{ $labels.missing }}!", 1.0), "!");
        assert_eq!(expand("{{ humanize $value }}", 1234567.0), "1.235M");
        assert_eq!(expand("{{ $value | humanize }}", 0.0123), "12.3m");
        assert_eq!(expand("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(expand("{{ $value | humanizePercentage }}", 0.256), "25.6%");
        assert_eq!(expand("{{ humanizeDuration $value }}", 3723.0), "1h 2m 3s");
        assert_eq!(expand("{{ printf \"%.2f\" $value }}", 1.0 / 3.0), "0.33");
        assert_eq!(expand("{{ $labels.job | toUpper }}", 0.0), "API");
        assert_eq!(
            expand("{{ $externalURL }}/alerts", 0.0),
            "http://tern:3000/alerts"
        );
        assert_eq!(expand("no actions", 0.0), "no actions");
        assert_eq!(fmt_g(1e21, 4), "1e+21");
        assert_eq!(fmt_g(123456.0, 4), "1.235e+05");
    }

    #[test]
    fn unsupported_templates_are_rejected_at_parse_time() {
        for t in [
            "{{ $labels.job",
            "{{ range $labels }}x{{ end }}",
            "{{ $nope }}",
            "{{ frobnicate $value }}",
            "{{ printf $value }}",
            "{{ $labels.a-b }}",
        ] {
            assert!(Template::parse(t).is_err(), "{t} was accepted");
        }
    }
}
