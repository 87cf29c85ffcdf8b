//! Reads a TorchScript archive's output layout from the code it carries, without running it.
//!
//! A `torch.jit.save` file is a zip archive: `<name>/data.pkl` pickles the root module (its first
//! opcode names the root class, e.g. `__torch__.torch.fx.graph_module.ResNet`) and
//! `<name>/code/__torch__/…/*.py` holds each class's TorchScript source. The root class's `forward`
//! signature gives the return type (`Tensor`, `Tuple[Tensor, Tensor]`, `Dict[str, Tensor]`), and for a
//! dict the literal it returns gives the keys — for `create_feature_extractor`, the node names. Keys
//! of 34 characters or more are hoisted by TorchScript into variables (`_0 = "features_…"`), and a
//! dict filled in several statements adds keys with `torch._set_item(d, "k", v)` or
//! `torch.update(d, {…})`: both are read. Any other statement touching the returned dict makes the
//! keys unknowable from the code, and loading refuses rather than guess.
//!
//! Every entry of the archive is also read once through its zip CRC-32 ([`check_crcs`]), so a
//! damaged file is refused when it is loaded, which libtorch does not do.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::layout::OutputLayout;

/// The layout of what the archive's root `forward` returns, or why it could not be read.
pub(crate) fn read_output_layout(path: &Path) -> Result<OutputLayout, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("it is not a TorchScript zip archive: {e}"))?;
    let pickle_name = archive
        .file_names()
        .find(|name| name.matches('/').count() == 1 && name.ends_with("/data.pkl"))
        .map(str::to_owned)
        .ok_or("it has no `data.pkl`: not a TorchScript archive")?;
    let root = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    let (module, class) = root_class(&read_entry(&mut archive, &pickle_name, 4096)?)?;
    let code_name = format!("{root}code/{}.py", module.replace('.', "/"));
    let code = read_entry(&mut archive, &code_name, usize::MAX)?;
    let code = String::from_utf8(code).map_err(|_| format!("`{code_name}` is not UTF-8"))?;
    let forward =
        forward_of(&code, &class).ok_or_else(|| format!("no `forward` of class `{class}` in `{code_name}`"))?;
    layout_of(&forward)
}

/// Reads every entry of the archive through its CRC-32, which the zip reader checks at the end of
/// each entry: a damaged archive is an error naming the entry. Costs one pass over the file (its
/// entries are stored uncompressed by `torch.jit.save`).
pub(crate) fn check_crcs(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("it is not a TorchScript zip archive: {e}"))?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| format!("its entry {index} cannot be read: {e}"))?;
        let name = entry.name().to_owned();
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| format!("its entry `{name}` does not match its zip CRC-32 ({e}): the file is damaged"))?;
    }
    Ok(())
}

/// At most `limit` bytes of an archive entry.
fn read_entry(archive: &mut zip::ZipArchive<File>, name: &str, limit: usize) -> Result<Vec<u8>, String> {
    let entry = archive.by_name(name).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    let mut bytes = Vec::new();
    entry.take(limit as u64).read_to_end(&mut bytes).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    Ok(bytes)
}

/// The `(module, class)` of the pickled root object: its first opcode after `PROTO` is `GLOBAL`
/// (`c<module>\n<class>\n`), as libtorch's pickler writes it.
fn root_class(pickle: &[u8]) -> Result<(String, String), String> {
    let rest = match pickle {
        [0x80, _protocol, rest @ ..] => rest,
        rest => rest,
    };
    let unreadable = || "its `data.pkl` does not start with the root class".to_owned();
    let rest = rest.strip_prefix(b"c").ok_or_else(unreadable)?;
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let module = lines.next().and_then(|m| std::str::from_utf8(m).ok()).ok_or_else(unreadable)?;
    let class = lines.next().and_then(|c| std::str::from_utf8(c).ok()).ok_or_else(unreadable)?;
    if module.is_empty() || class.is_empty() {
        return Err(unreadable());
    }
    Ok((module.to_owned(), class.to_owned()))
}

/// A method's signature and body, as written in the archive's code.
#[derive(Debug, PartialEq)]
struct Forward {
    return_type: String,
    body: String,
}

/// The `forward` of `class` in a code file: its return annotation and its body's text.
fn forward_of(code: &str, class: &str) -> Option<Forward> {
    let lines: Vec<&str> = code.lines().collect();
    let class_line = lines.iter().position(|line| {
        line.strip_prefix("class ")
            .and_then(|rest| rest.strip_prefix(class))
            .is_some_and(|rest| rest.starts_with('(') || rest.starts_with(':'))
    })?;
    let def_line = (class_line + 1..lines.len())
        .take_while(|&i| lines[i].is_empty() || lines[i].starts_with(' '))
        .find(|&i| lines[i].trim_start().starts_with("def forward("))?;
    let def_indent = indent(lines[def_line]);
    // The signature may span lines: it ends at the line that ends with `:`.
    let signature_end = (def_line..lines.len()).find(|&i| lines[i].trim_end().ends_with(':'))?;
    let signature = lines[def_line..=signature_end].join(" ");
    let return_type = signature.rsplit_once("->")?.1.trim().strip_suffix(':')?.trim().to_owned();
    let body: Vec<&str> = lines[signature_end + 1..]
        .iter()
        .take_while(|line| line.trim().is_empty() || indent(line) > def_indent)
        .copied()
        .collect();
    Some(Forward { return_type, body: body.join("\n") })
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The layout a return annotation and a body give.
fn layout_of(forward: &Forward) -> Result<OutputLayout, String> {
    let ty = forward.return_type.replace(' ', "");
    if ty == "Tensor" {
        return Ok(OutputLayout::Tensor);
    }
    if let Some(items) = ty.strip_prefix("Tuple[").and_then(|t| t.strip_suffix(']')) {
        let items: Vec<&str> = items.split(',').collect();
        if items.iter().all(|item| *item == "Tensor") {
            return Ok(OutputLayout::Tuple(items.len()));
        }
    }
    if ty == "Dict[str,Tensor]" {
        let keys = returned_dict_keys(&forward.body).ok_or(
            "its `forward` returns a dict built in a way its code does not show the keys of (not a literal, \
             string variables, `torch._set_item` or `torch.update`): name its outputs with \
             `jit::Module::load_with_outputs(file, device, &[\"key\", …])`",
        )?;
        return Ok(OutputLayout::Dict(keys));
    }
    Err(format!(
        "its `forward` returns `{}`; distill reads a tensor, a tuple of tensors or a dict of tensors",
        forward.return_type
    ))
}

/// The keys of the dict that the body returns: a literal returned directly (`return {"a": x}`) or
/// through the variable it was assigned to (`_42 = {"a": x}` … `return _42`), with keys written as
/// literals or as variables holding one (`_0 = "a_long_key"`), and the keys later statements add to
/// that variable (`torch._set_item(d, "b", y)`, `torch.update(d, {"c": z})`). `None` when any other
/// statement uses the variable, since it might change the keys.
fn returned_dict_keys(body: &str) -> Option<Vec<String>> {
    let constants = string_constants(body);
    let returned = body.lines().rev().find_map(|line| line.trim().strip_prefix("return "))?.trim();
    if returned.starts_with('{') {
        return dict_literal_keys(returned, &constants);
    }
    if !is_identifier(returned) {
        return None;
    }
    let assignment = format!("{returned} = {{");
    let mut keys: Option<Vec<String>> = None;
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line == format!("return {returned}") {
            continue;
        }
        if let Some(rest) = line.strip_prefix(&assignment) {
            // The dict is (re)built here: earlier keys no longer count.
            keys = Some(dict_literal_keys(&format!("{{{rest}"), &constants)?);
        } else if let Some(args) = call_on(line, "torch._set_item(", returned) {
            let key = first_argument_key(args, &constants)?;
            push_new(keys.as_mut()?, key);
        } else if let Some(args) = call_on(line, "torch.update(", returned) {
            let added = dict_literal_keys(args, &constants)?;
            let keys = keys.as_mut()?;
            for key in added {
                push_new(keys, key);
            }
        } else if mentions(line, returned) {
            return None;
        }
    }
    keys
}

/// The variables the body assigns a string literal to (`_0 = "features_denseblock4_conv2"`).
fn string_constants(body: &str) -> std::collections::HashMap<String, String> {
    body.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(" = ")?;
            let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let mut chars = value.chars().skip(1);
            let literal = string_literal(&mut chars, quote)?;
            (is_identifier(name) && chars.next().is_none()).then(|| (name.to_owned(), literal))
        })
        .collect()
}

/// The arguments after `variable, ` of the statement `<function>variable, …)`, if it is one.
fn call_on<'l>(line: &'l str, function: &str, variable: &str) -> Option<&'l str> {
    line.strip_prefix(function)?.strip_prefix(variable)?.strip_prefix(", ")
}

/// The key of `"key", value)`: a literal or a string variable.
fn first_argument_key(args: &str, constants: &std::collections::HashMap<String, String>) -> Option<String> {
    let mut chars = args.chars();
    match chars.next()? {
        quote @ ('"' | '\'') => string_literal(&mut chars, quote),
        _ => constants.get(args.split_once(',')?.0.trim()).cloned(),
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Whether `line` uses the identifier `name` (not as part of a longer identifier or a string).
fn mentions(line: &str, name: &str) -> bool {
    let mut words = line.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    words.any(|word| word == name)
}

/// The string keys of the dict literal at the start of `text` (`{"a": f(x, ), "b": y}`); a key may
/// be a variable of `constants`.
fn dict_literal_keys(text: &str, constants: &std::collections::HashMap<String, String>) -> Option<Vec<String>> {
    let mut chars = text.chars().peekable();
    if chars.next()? != '{' {
        return None;
    }
    let mut keys = Vec::new();
    let mut depth = 1usize;
    let mut expect_key = true;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let literal = string_literal(&mut chars, c)?;
                if depth == 1 && expect_key {
                    push_new(&mut keys, literal);
                    expect_key = false;
                }
            }
            '{' | '(' | '[' => depth += 1,
            // A bracket that closes the dict's own level or one never opened: not a dict literal
            // this reader understands (and never an underflow).
            ')' | ']' => depth = depth.checked_sub(1).filter(|&inner| inner > 0)?,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(keys);
                }
            }
            ',' if depth == 1 => expect_key = true,
            c if c.is_whitespace() => {}
            c if depth == 1 && expect_key && (c.is_alphabetic() || c == '_') => {
                // A key held by a variable (TorchScript hoists long strings): `_0: x`.
                let mut name = c.to_string();
                while let Some(&next) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                    name.push(next);
                    chars.next();
                }
                push_new(&mut keys, constants.get(&name)?.clone());
                expect_key = false;
            }
            _ if depth == 1 && expect_key => return None, // a key that is neither
            _ => {}
        }
    }
    None
}

/// Adds `key` unless it is there: a key written twice in one dict literal is one entry, in its
/// first place, as the dict the code builds has it.
fn push_new(keys: &mut Vec<String>, key: String) {
    if !keys.contains(&key) {
        keys.push(key);
    }
}

/// The rest of a string literal opened by `quote`, unescaped.
fn string_literal(chars: &mut impl Iterator<Item = char>, quote: char) -> Option<String> {
    let mut literal = String::new();
    loop {
        match chars.next()? {
            '\\' => literal.push(chars.next()?),
            c if c == quote => return Some(literal),
            c => literal.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FX_CODE: &str = "class ResNet(Module):
  __parameters__ = []
  conv1 : __torch__.torch.nn.modules.conv.Conv2d
  def forward(self: __torch__.torch.fx.graph_module.ResNet,
    x: Tensor) -> Dict[str, Tensor]:
    fc = self.fc
    _23 = (relu1).forward1(x, )
    _42 = {\"layer3\": _23, \"logits\": (fc).forward(torch.flatten(_23, 1), )}
    return _42
class Other(Module):
  def forward(self) -> Tensor:
    return x
";

    #[test]
    fn reads_the_keys_of_a_returned_dict_variable() {
        let forward = forward_of(FX_CODE, "ResNet").unwrap();
        assert_eq!(forward.return_type, "Dict[str, Tensor]");
        assert_eq!(layout_of(&forward), Ok(OutputLayout::Dict(vec!["layer3".into(), "logits".into()])));
    }

    #[test]
    fn reads_tuples_tensors_and_direct_dict_literals() {
        let tuple =
            Forward { return_type: "Tuple[Tensor, Tensor, Tensor]".into(), body: "    return (a, b, c)".into() };
        assert_eq!(layout_of(&tuple), Ok(OutputLayout::Tuple(3)));
        let tensor = Forward { return_type: "Tensor".into(), body: String::new() };
        assert_eq!(layout_of(&tensor), Ok(OutputLayout::Tensor));
        let dict = Forward {
            return_type: "Dict[str, Tensor]".into(),
            body: "    return {\"a,b\": f(x, {\"n\": 1}), 'c\\'d': g[0]}".into(),
        };
        assert_eq!(layout_of(&dict), Ok(OutputLayout::Dict(vec!["a,b".into(), "c'd".into()])));
    }

    #[test]
    fn refuses_what_it_cannot_name() {
        let list = Forward { return_type: "List[Tensor]".into(), body: String::new() };
        assert!(layout_of(&list).unwrap_err().contains("List[Tensor]"));
        let computed = Forward { return_type: "Dict[str, Tensor]".into(), body: "    return make(x)".into() };
        let err = layout_of(&computed).unwrap_err();
        assert!(err.contains("load_with_outputs"), "{err}");
        let nested = Forward { return_type: "Tuple[Tensor, Tuple[Tensor, Tensor]]".into(), body: String::new() };
        assert!(layout_of(&nested).is_err());
        assert_eq!(forward_of(FX_CODE, "Res"), None);
    }

    /// Brackets that close what was never opened make no dict literal, and no arithmetic underflow
    /// on the nesting depth (a panic in debug builds).
    #[test]
    fn unbalanced_brackets_are_not_a_dict_literal() {
        let constants = std::collections::HashMap::new();
        for text in ["{\"a\": x)}", "{\"a\": x]}", "{\"a\": x)]}}", "{)}"] {
            assert_eq!(dict_literal_keys(text, &constants), None, "{text}");
        }
        assert_eq!(dict_literal_keys("{\"a\": f(x)}", &constants), Some(vec!["a".to_owned()]));
    }

    /// A key written twice (two fx nodes given one output name) is one entry of the returned dict,
    /// holding the last value: one output, where it was first written, not two of the same name
    /// that no return value could ever match.
    #[test]
    fn a_key_written_twice_in_a_literal_is_one_output() {
        let constants = std::collections::HashMap::from([("_0".to_owned(), "a".to_owned())]);
        let keys = dict_literal_keys("{\"a\": x, \"b\": y, _0: z}", &constants);
        assert_eq!(keys, Some(vec!["a".to_owned(), "b".to_owned()]));
    }

    /// What `torch.jit.script` writes for keys of 34 characters or more, and for dicts filled in
    /// several statements (copied from archives torch 2.13 saved).
    #[test]
    fn reads_hoisted_keys_and_dicts_filled_in_several_statements() {
        let dict = |body: &str| layout_of(&Forward { return_type: "Dict[str, Tensor]".into(), body: body.into() });
        let hoisted = "    _0 = \"features_denseblock4_denselayer16_conv2\"
    _1 = \"features_denseblock4_denselayer15_conv2\"
    _2 = {_0: torch.mul(x, CONSTANTS.c0), \"logits\": torch.add(x, CONSTANTS.c1), _1: x}
    return _2";
        let keys = ["features_denseblock4_denselayer16_conv2", "logits", "features_denseblock4_denselayer15_conv2"];
        assert_eq!(dict(hoisted), Ok(OutputLayout::Dict(keys.map(str::to_owned).to_vec())));
        let set_item = "    d = {\"a\": torch.mul(x, 2)}
    torch._set_item(d, \"b\", torch.add(x, 1))
    return d";
        assert_eq!(dict(set_item), Ok(OutputLayout::Dict(vec!["a".into(), "b".into()])));
        let update = "    d = {\"a\": torch.mul(x, 2)}
    torch.update(d, {\"c\": x, \"a\": x})
    return d";
        assert_eq!(dict(update), Ok(OutputLayout::Dict(vec!["a".into(), "c".into()])));
        // A statement that may change the dict in a way the code does not show: refused, not guessed.
        let opaque = "    d = {\"a\": torch.mul(x, 2)}
    d0 = fill(d, x)
    return d";
        assert!(dict(opaque).unwrap_err().contains("load_with_outputs"));
        let unknown_variable = "    d = {_9: x}
    return d";
        assert!(dict(unknown_variable).is_err());
    }

    #[test]
    fn reads_the_root_class_from_the_pickle() {
        let pickle = b"\x80\x02c__torch__.torch.fx.graph_module\nResNet\nq\x00)";
        assert_eq!(root_class(pickle), Ok(("__torch__.torch.fx.graph_module".into(), "ResNet".into())));
        assert!(root_class(b"\x80\x02}q\x00").is_err());
    }
}
