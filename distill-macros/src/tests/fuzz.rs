//! Property test: thousands of random and mutated token streams through both macros' `proc_macro2`
//! entry points; none may panic, and every output must be tokens (items or `compile_error!`s).

use std::panic::{catch_unwind, AssertUnwindSafe};

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

use super::corpus::{DERIVE, DSL};
use crate::{derive, dsl};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const IDENTS: &[&str] = &[
    "student",
    "teacher",
    "with",
    "struct",
    "for",
    "pub",
    "input",
    "all_calls",
    "Mse",
    "conv2d_adapter",
    "features",
    "conv",
    "r#type",
    "self",
    "Self",
    "crate",
    "super",
    "_",
    "distill",
    "skip",
    "rename",
    "union",
    "enum",
    "where",
    "x",
    "big",
    "wide",
];
const PUNCTS: &[&str] = &[".", "=>", ":", ";", ",", "#", "&", "*", "-", "::", "<", ">", "|", "'", "!", "=", "?", "+"];

fn random_leaf(rng: &mut Rng) -> TokenTree {
    let span = Span::call_site();
    match rng.below(4) {
        0 => {
            let name = IDENTS[rng.below(IDENTS.len())];
            match name.strip_prefix("r#") {
                Some(raw) => TokenTree::Ident(Ident::new_raw(raw, span)),
                None => TokenTree::Ident(Ident::new(name, span)),
            }
        }
        1 => {
            let chars: Vec<char> = PUNCTS[rng.below(PUNCTS.len())].chars().collect();
            let c = chars[rng.below(chars.len())];
            let spacing = if rng.chance(30) { Spacing::Joint } else { Spacing::Alone };
            TokenTree::Punct(Punct::new(c, spacing))
        }
        2 => TokenTree::Literal(match rng.below(9) {
            0 => Literal::usize_unsuffixed(rng.below(5)),
            1 => Literal::u64_unsuffixed(u64::MAX - rng.below(3) as u64),
            2 => Literal::f64_unsuffixed(0.1 * rng.below(30) as f64),
            3 => Literal::string(["features.0.conv", "", "a..b", ".", "0", "x y", "é.ü"][rng.below(7)]),
            4 => Literal::character('x'),
            5 => Literal::i32_suffixed(-1),
            6 => Literal::byte_string(b"features"),
            7 => "0.1".parse().expect("float literal"),
            _ => "1e3".parse().expect("float literal"),
        }),
        _ => TokenTree::Group(Group::new(Delimiter::None, TokenStream::new())),
    }
}

fn random_stream(rng: &mut Rng, depth: usize) -> TokenStream {
    let len = rng.below(12);
    (0..len)
        .map(|_| {
            if depth < 4 && rng.chance(20) {
                let delimiter = [Delimiter::Parenthesis, Delimiter::Bracket, Delimiter::Brace][rng.below(3)];
                TokenTree::Group(Group::new(delimiter, random_stream(rng, depth + 1)))
            } else {
                random_leaf(rng)
            }
        })
        .collect()
}

/// Deletes, duplicates, swaps, replaces, wraps or unwraps tokens, at any depth.
fn mutate(rng: &mut Rng, stream: TokenStream, depth: usize) -> TokenStream {
    let mut tokens: Vec<TokenTree> = stream.into_iter().collect();
    let edits = 1 + rng.below(3);
    for _ in 0..edits {
        if tokens.is_empty() {
            tokens.push(random_leaf(rng));
            continue;
        }
        let i = rng.below(tokens.len());
        match rng.below(8) {
            0 => {
                tokens.remove(i);
            }
            1 => {
                let copy = tokens[i].clone();
                tokens.insert(i, copy);
            }
            2 => {
                let j = rng.below(tokens.len());
                tokens.swap(i, j);
            }
            3 => tokens[i] = random_leaf(rng),
            4 => {
                let leaf = random_leaf(rng);
                tokens.insert(i, leaf);
            }
            5 => {
                let delimiter = [Delimiter::Parenthesis, Delimiter::Bracket, Delimiter::Brace][rng.below(3)];
                let inner: TokenStream = tokens.drain(i..(i + 1 + rng.below(3)).min(tokens.len())).collect();
                tokens.insert(i, TokenTree::Group(Group::new(delimiter, inner)));
            }
            _ => {
                // Recurse into a group, or unwrap it.
                if let TokenTree::Group(group) = &tokens[i] {
                    if rng.chance(25) {
                        let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                        tokens.splice(i..=i, inner);
                    } else if depth < 6 {
                        let new = mutate(rng, group.stream(), depth + 1);
                        tokens[i] = TokenTree::Group(Group::new(group.delimiter(), new));
                    }
                }
            }
        }
    }
    tokens.into_iter().collect()
}

fn run(name: &str, input: TokenStream, expand: fn(TokenStream) -> TokenStream) {
    let text = input.to_string();
    let result = catch_unwind(AssertUnwindSafe(|| expand(input)));
    match result {
        Ok(output) => {
            // Whatever came out re-lexes (it is handed to rustc as tokens).
            let printed = output.to_string();
            assert!(printed.parse::<TokenStream>().is_ok(), "{name} output does not lex for input:\n{text}");
        }
        Err(_) => panic!("{name} panicked on input:\n{text}"),
    }
}

const CASES: usize = 5000;

#[test]
fn mutated_valid_inputs_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let dsl_corpus: Vec<TokenStream> = DSL.iter().map(|s| s.parse().expect("corpus lexes")).collect();
    let derive_corpus: Vec<TokenStream> = DERIVE.iter().map(|s| s.parse().expect("corpus lexes")).collect();
    for _ in 0..CASES {
        let mut input = dsl_corpus[rng.below(dsl_corpus.len())].clone();
        for _ in 0..1 + rng.below(3) {
            input = mutate(&mut rng, input, 0);
        }
        run("distill!", input, dsl::expand);

        let mut input = derive_corpus[rng.below(derive_corpus.len())].clone();
        for _ in 0..1 + rng.below(3) {
            input = mutate(&mut rng, input, 0);
        }
        run("derive(Distillable)", input, derive::expand);
    }
}

#[test]
fn random_streams_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..CASES {
        let input = random_stream(&mut rng, 0);
        run("distill!", input.clone(), dsl::expand);
        run("derive(Distillable)", input, derive::expand);
        // A plausible header in front of random pairs reaches the pair parser and the checks.
        let body = TokenTree::Group(Group::new(Delimiter::Brace, random_stream(&mut rng, 1)));
        let mut input: TokenStream = "pub struct Kd for Net => Net".parse().expect("lexes");
        input.extend([body.clone()]);
        run("distill!", input, dsl::expand);
        let mut input: TokenStream = "struct S".parse().expect("lexes");
        input.extend([body]);
        run("derive(Distillable)", input, derive::expand);
    }
}

#[test]
fn the_valid_corpus_expands_without_errors() {
    for input in DSL {
        let out = dsl::expand(input.parse().expect("lexes")).to_string();
        assert!(!out.contains("compile_error"), "{out}");
    }
    for input in DERIVE {
        let out = derive::expand(input.parse().expect("lexes")).to_string();
        assert!(!out.contains("compile_error"), "{out}");
    }
}
