//! `distill::text::data`: documents from text files, packed and padded sequences with their document
//! ids, positions, targets and masks, the split, and batches by sequence number.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use distill::text::data::{
    fortune_files, read_documents, DataError, Document, Packing, TokenDataset, TokenDatasetConfig, IGNORE_TARGET,
    PAD_DOCUMENT,
};
use distill::text::{GgufFile, Tokenizer};
use tch::{Device, Tensor};

fn tokenizer() -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text/tiny.gguf");
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn documents(texts: &[&str]) -> Vec<Document> {
    texts.iter().enumerate().map(|(i, text)| Document { source: format!("doc{i}"), text: (*text).to_owned() }).collect()
}

fn values(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

const TEXTS: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world!",
    "Numbers like 12345 and 3.14159 appear in text, again and again and again.",
    "A café in Paris.",
];

fn config(seq_len: usize, packing: Packing) -> TokenDatasetConfig {
    TokenDatasetConfig { seq_len, packing, validation_fraction: 0.0, seed: 0, append_eos: true }
}

#[test]
fn packed_sequences_keep_documents_apart() {
    let tokenizer = tokenizer();
    let docs = documents(&TEXTS);
    let encoded: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| {
            let mut ids = tokenizer.encode(t, false).unwrap();
            ids.push(2); // EOS
            ids
        })
        .collect();
    let total: usize = encoded.iter().map(Vec::len).sum();
    let dataset = TokenDataset::build(&docs, &tokenizer, &config(16, Packing::Packed)).unwrap();
    let train = dataset.train();
    assert!(dataset.validation().is_empty());
    assert_eq!(train.len(), total.div_ceil(16));
    assert_eq!(train.token_count(), total);

    // The stream is the documents' ids in order, then padding (the padding id is 2).
    let stream: Vec<u32> = (0..train.len()).flat_map(|i| train.sequence(i).unwrap().ids.to_vec()).collect();
    let expected: Vec<u32> = encoded.concat();
    assert_eq!(&stream[..total], expected.as_slice());
    assert!(stream[total..].iter().all(|&id| id == 2));

    // Document ids, positions (restarting at documents and at sequences) and targets.
    let batch = train.batch(&(0..train.len()).collect::<Vec<_>>(), Device::Cpu).unwrap();
    assert_eq!(batch.input_ids.size(), [train.len() as i64, 16]);
    let documents = values(&batch.document_ids);
    let positions = values(&batch.position_ids);
    let targets = values(&batch.targets);
    let mask = values(&batch.attention_mask);
    let mut at = 0;
    for (d, ids) in encoded.iter().enumerate() {
        for (k, _) in ids.iter().enumerate() {
            let i = at + k;
            assert_eq!(documents[i], d as i64);
            // Counted from the document's start, or from the sequence's when it began in an earlier one.
            let sequence_start = i - i % 16;
            assert_eq!(positions[i], (i - at.max(sequence_start)) as i64, "token {i}");
            let next_in_view = k + 1 < ids.len() && (i + 1) % 16 != 0;
            assert_eq!(targets[i], if next_in_view { i64::from(ids[k + 1]) } else { IGNORE_TARGET }, "token {i}");
            assert_eq!(mask[i], 1);
        }
        at += ids.len();
    }
    assert!(documents[total..].iter().all(|&d| d == PAD_DOCUMENT));
    assert!(mask[total..].iter().all(|&m| m == 0));
    assert!(targets[total..].iter().all(|&t| t == IGNORE_TARGET));

    // Attention: causal and within a document.
    let allowed = batch.attention_allowed().unwrap();
    assert_eq!(allowed.size(), [train.len() as i64, 1, 16, 16]);
    let first = encoded[0].len();
    if first < 16 {
        let row = Vec::<bool>::try_from(allowed.get(0).get(0).get(first as i64)).unwrap();
        // The first token of document 1 sees only itself.
        let seen: Vec<usize> = row.iter().enumerate().filter(|(_, &a)| a).map(|(j, _)| j).collect();
        assert_eq!(seen, [first]);
    }
}

#[test]
fn padded_sequences_hold_one_document_each() {
    let tokenizer = tokenizer();
    let docs = documents(&TEXTS);
    let dataset = TokenDataset::build(&docs, &tokenizer, &config(12, Packing::Padded)).unwrap();
    let train = dataset.train();
    let lengths: Vec<usize> = TEXTS.iter().map(|t| tokenizer.encode(t, false).unwrap().len() + 1).collect();
    assert_eq!(train.len(), lengths.iter().map(|l| l.div_ceil(12)).sum::<usize>());
    let mut index = 0;
    for (d, &len) in lengths.iter().enumerate() {
        for part in 0..len.div_ceil(12) {
            let sequence = train.sequence(index).unwrap();
            let tokens = (len - part * 12).min(12);
            assert_eq!(sequence.token_count(), tokens, "document {d}, part {part}");
            assert!((0..tokens).all(|i| sequence.document(i) == Some(d)));
            assert!((tokens..12).all(|i| sequence.document(i).is_none()));
            assert_eq!(sequence.positions[0], 0);
            index += 1;
        }
    }
}

#[test]
fn the_split_is_by_document_and_deterministic() {
    let tokenizer = tokenizer();
    let texts: Vec<String> = (0..200).map(|i| format!("Document number {i} says hello {}.", i * 7)).collect();
    let docs = documents(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let config = TokenDatasetConfig { seq_len: 8, validation_fraction: 0.25, ..Default::default() };
    let dataset = TokenDataset::build(&docs, &tokenizer, &config).unwrap();
    let ids_of = |sequences: &distill::text::data::TokenSequences| -> BTreeSet<usize> {
        (0..sequences.len())
            .flat_map(|i| {
                let s = sequences.sequence(i).unwrap();
                (0..8).filter_map(move |k| s.document(k))
            })
            .collect()
    };
    let train = ids_of(dataset.train());
    let validation = ids_of(dataset.validation());
    assert!(train.is_disjoint(&validation));
    assert_eq!(train.len() + validation.len(), 200);
    // 25 % of 200 documents; a binomial's standard deviation is √(200·0.25·0.75) ≈ 6, so ±30 is 5σ.
    assert!((20..=80).contains(&validation.len()), "{}", validation.len());

    // The same documents in another order split the same way.
    let reversed: Vec<Document> = docs.iter().rev().cloned().collect();
    let again = TokenDataset::build(&reversed, &tokenizer, &config).unwrap();
    let again_validation: BTreeSet<usize> = ids_of(again.validation()).into_iter().map(|d| 199 - d).collect();
    assert_eq!(again_validation, validation);
    // Same input, same sequences; another seed, another split.
    let twice = TokenDataset::build(&docs, &tokenizer, &config).unwrap();
    assert_eq!(twice.train().content_hash(), dataset.train().content_hash());
    let reseeded = TokenDataset::build(&docs, &tokenizer, &TokenDatasetConfig { seed: 1, ..config.clone() }).unwrap();
    assert_ne!(ids_of(reseeded.validation()), validation);
}

#[test]
fn epoch_batches_are_seeded_permutations() {
    let tokenizer = tokenizer();
    let texts: Vec<String> = (0..50).map(|i| format!("text {i}")).collect();
    let docs = documents(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let dataset = TokenDataset::build(&docs, &tokenizer, &config(4, Packing::Padded)).unwrap();
    let n = dataset.train().len();
    let batches = dataset.train().epoch_batches(8, 7, 0).unwrap();
    assert_eq!(batches.len(), n.div_ceil(8));
    let mut all: Vec<usize> = batches.concat();
    assert_ne!(all, (0..n).collect::<Vec<_>>(), "shuffled");
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(dataset.train().epoch_batches(8, 7, 0).unwrap(), batches);
    assert_ne!(dataset.train().epoch_batches(8, 7, 1).unwrap(), batches);
    let batch = dataset.train().batch(&batches[1], Device::Cpu).unwrap();
    assert_eq!(batch.sequence_ids, batches[1]);
    let first = dataset.train().sequence(batches[1][0]).unwrap();
    assert_eq!(values(&batch.input_ids.get(0)), first.ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>());
}

#[test]
fn mistakes_are_errors() {
    let tokenizer = tokenizer();
    let docs = documents(&TEXTS);
    let build = |config: TokenDatasetConfig| TokenDataset::build(&docs, &tokenizer, &config).unwrap_err().to_string();
    assert!(build(config(1, Packing::Packed)).contains("seq_len is 1"));
    assert!(build(TokenDatasetConfig { validation_fraction: 1.0, ..config(8, Packing::Packed) }).contains("[0, 1)"));
    let json = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text/tiny_tokenizer.json");
    let no_eos = Tokenizer::from_file(json).unwrap();
    let error = TokenDataset::build(&docs, &no_eos, &config(8, Packing::Packed)).unwrap_err();
    assert!(error.to_string().contains("no EOS id"), "{error}");
    let dataset = TokenDataset::build(&docs, &tokenizer, &config(8, Packing::Packed)).unwrap();
    let error = dataset.train().batch(&[0, 999], Device::Cpu).unwrap_err();
    assert!(
        matches!(&error, DataError::SequenceOutOfRange { index: 999, .. })
            && error.to_string().contains("sequence 999 is out of range"),
        "{error}"
    );
    let error: distill::DistillError = error.into();
    assert!(matches!(error, distill::DistillError::Text(_)));
    assert!(matches!(read_documents(&["/nonexistent/file"], None), Err(DataError::Io { .. })));
}

#[test]
fn documents_are_read_and_split_at_separator_lines() {
    let dir = std::env::temp_dir().join(format!("distill-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), "first\nfortune\n%\nsecond\r\n%\r\n\n%\nthird 100%\n").unwrap();
    std::fs::write(dir.join("a.dat"), [0u8, 1, 2]).unwrap();
    std::fs::write(dir.join("b"), [0x66, 0xff, 0x66]).unwrap();
    let files = fortune_files(&dir).unwrap();
    assert_eq!(files, [dir.join("a"), dir.join("b")]);
    let docs = read_documents(&files[..1], Some("%")).unwrap();
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts, ["first\nfortune\n", "second\r\n", "third 100%\n"]);
    assert_eq!(docs[2].source, format!("{}#3", dir.join("a").display()));
    let whole = read_documents(&files[..1], None).unwrap();
    assert_eq!(whole.len(), 1);
    let error = read_documents(&files[1..], None).unwrap_err();
    assert!(matches!(error, DataError::NotUtf8 { offset: 1, .. }), "{error:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fortunes_corpus_becomes_sequences() {
    let dir = Path::new("/usr/share/games/fortunes");
    if !dir.is_dir() {
        eprintln!("fortunes_corpus_becomes_sequences: skipped: Debian's `fortunes` package is not installed");
        return;
    }
    let files: Vec<PathBuf> = fortune_files(dir).unwrap().into_iter().filter(|f| f.ends_with("riddles")).collect();
    assert_eq!(files.len(), 1);
    let docs = read_documents(&files, Some("%")).unwrap();
    assert!(docs.len() > 100, "{}", docs.len());
    let tokenizer = tokenizer();
    for doc in docs.iter().take(20) {
        let ids = tokenizer.encode(&doc.text, false).unwrap();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), doc.text);
    }
    let dataset =
        TokenDataset::build(&docs, &tokenizer, &TokenDatasetConfig { seq_len: 64, ..Default::default() }).unwrap();
    assert!(!dataset.train().is_empty() && !dataset.validation().is_empty());
    eprintln!(
        "riddles: {} documents → {} train and {} validation sequences of 64 tokens",
        docs.len(),
        dataset.train().len(),
        dataset.validation().len()
    );
}

#[test]
fn a_split_the_config_asks_for_is_never_empty() {
    let tokenizer = tokenizer();
    let split_of = |error: DataError| match error {
        DataError::EmptySplit { split, documents, .. } => (split, documents),
        other => panic!("expected DataError::EmptySplit, got {other:?}"),
    };
    // No document: refused when built, not later by whoever reads the empty training split.
    let error = TokenDataset::build(&[], &tokenizer, &config(8, Packing::Packed)).unwrap_err();
    assert!(error.to_string().contains("no document holds a token"), "{error}");
    assert_eq!(split_of(error), ("training", 0));
    // Documents that encode to nothing (no text, no EOS appended) are no documents either.
    let blank = TokenDatasetConfig { append_eos: false, ..config(8, Packing::Padded) };
    let error = TokenDataset::build(&documents(&["", ""]), &tokenizer, &blank).unwrap_err();
    assert_eq!(split_of(error), ("training", 0));

    // One document goes to one side, decided by its hash: with a fraction near 1 it is held out,
    // leaving no training sequence; with a fraction near 0 the validation split asked for is empty.
    let one = documents(&TEXTS[..1]);
    let mostly_validation = TokenDatasetConfig { validation_fraction: 1.0 - 1e-12, ..config(8, Packing::Packed) };
    let error = TokenDataset::build(&one, &tokenizer, &mostly_validation).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("the training split holds no sequence") && message.contains("smaller"), "{message}");
    assert_eq!(split_of(error), ("training", 1));
    let barely_validation = TokenDatasetConfig { validation_fraction: 1e-12, ..config(8, Packing::Packed) };
    let error = TokenDataset::build(&one, &tokenizer, &barely_validation).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("the validation split holds no sequence") && message.contains("or 0"), "{message}");
    assert_eq!(split_of(error), ("validation", 1));
    let error: distill::DistillError = TokenDataset::build(&[], &tokenizer, &barely_validation).unwrap_err().into();
    assert!(matches!(error, distill::DistillError::Text(_)));

    // A fraction of 0 asks for no validation split: empty, as asked.
    let dataset = TokenDataset::build(&one, &tokenizer, &config(8, Packing::Packed)).unwrap();
    assert!(!dataset.train().is_empty() && dataset.validation().is_empty());
}
