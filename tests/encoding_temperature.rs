//! A teacher encoding remembers the temperature it was made at: every loss that reads one
//! (`TopKKl`, `TokenKd`, `ChunkedLoss` with a top-k teacher, `SampledKl`) refuses it at another
//! temperature, reads it at its own with the values it gave before, and reads one built from its
//! parts (`temperature: None`) unchecked; a token cache's batches carry the manifest's temperature.

use distill::cache::{Precision, TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding};
use distill::criterion::{
    ChunkedLoss, ChunkedTarget, CriterionError, Divergence, Packed, SampledKl, SampledLogits, SequenceKd,
    TokenCriterion, TokenKd, TopKKl, TopKTail,
};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

const B: i64 = 2;
const T: i64 = 3;
const H: i64 = 8;
const V: i64 = 40;
/// The temperature of the encodings; the criteria below read them at `OTHER`.
const ENCODED: f64 = 2.0;
const OTHER: f64 = 1.0;

/// Hidden states `[B, T, H]`, an `lm_head` weight `[V, H]`, the student logits `h Wᵀ` and teacher
/// logits `[B, T, V]`, in f64.
fn inputs() -> (Tensor, Tensor, Tensor, Tensor) {
    tch::manual_seed(40);
    let opts = (Kind::Double, Device::Cpu);
    let h = Tensor::randn([B, T, H], opts);
    let w = Tensor::randn([V, H], opts) * 0.5;
    let student = h.matmul(&w.tr());
    (h, w, student, Tensor::randn([B, T, V], opts) * 3.0)
}

/// `err` is the temperature mismatch of `encoding`, encoded at `ENCODED` and read at `OTHER`, and
/// its message shows both.
fn assert_mismatch(err: DistillError, encoding: Packed) {
    let message = err.to_string();
    assert!(
        matches!(
            err,
            DistillError::Criterion(CriterionError::TemperatureMismatch { encoding: e, encoded, criterion })
                if e == encoding && encoded == ENCODED && criterion == OTHER
        ),
        "{message}"
    );
    assert!(message.contains("encoded at temperature 2, but the criterion reads it at temperature 1"), "{message}");
}

fn without_temperature(top: &TopKTail) -> TopKTail {
    TopKTail {
        ids: top.ids.shallow_clone(),
        log_probs: top.log_probs.shallow_clone(),
        tail: top.tail.shallow_clone(),
        temperature: None,
    }
}

#[test]
fn a_top_k_tail_at_another_temperature_is_refused_by_every_loss_that_reads_it() {
    let (h, w, student, teacher) = inputs();
    let top = TopKTail::f_encode(&teacher, 7, ENCODED).unwrap();
    assert_eq!(top.temperature, Some(ENCODED));
    let kd = TopKKl::new(OTHER);
    let s = student.detach().set_requires_grad(true);
    assert_mismatch(kd.f_per_token(&s, &top).unwrap_err(), Packed::TopKTail);
    assert_mismatch(kd.f_loss_masked(&s, &top, None).unwrap_err(), Packed::TopKTail);
    assert_mismatch(kd.f_loss_masked(&student, &top, None).unwrap_err(), Packed::TopKTail);
    let labels = Tensor::randint(V, [B, T], (Kind::Int64, Device::Cpu));
    assert_mismatch(TokenKd::new(kd, 0.5).f_loss(&s, &top, &labels, None).unwrap_err(), Packed::TopKTail);
    let target = ChunkedTarget::TopK { teacher: &top, criterion: kd };
    assert_mismatch(ChunkedLoss::new(2).f_loss(&h, &w, &target, None).unwrap_err(), Packed::TopKTail);
    assert_mismatch(ChunkedLoss::new(2).f_loss_unchunked(&h, &w, &target, None).unwrap_err(), Packed::TopKTail);
}

/// At its own temperature an encoding gives, bit for bit, what the same parts give unchecked (the
/// values before the encodings carried a temperature); with every token kept, that is the full
/// forward KL. A `None` encoding is read at any temperature.
#[test]
fn a_top_k_tail_at_its_own_temperature_gives_the_unchecked_values() {
    let (h, w, student, teacher) = inputs();
    let top = TopKTail::f_encode(&teacher, 7, ENCODED).unwrap();
    let unchecked = without_temperature(&top);
    let kd = TopKKl::new(ENCODED);
    let bits = |t: Tensor| t.double_value(&[]).to_bits();
    let labels = Tensor::randint(V, [B, T], (Kind::Int64, Device::Cpu));
    assert!(kd.f_per_token(&student, &top).unwrap().equal(&kd.f_per_token(&student, &unchecked).unwrap()));
    assert_eq!(
        bits(kd.f_loss_masked(&student, &top, None).unwrap()),
        bits(kd.f_loss_masked(&student, &unchecked, None).unwrap())
    );
    let fused = TokenKd::new(kd, 0.5);
    assert_eq!(
        bits(fused.f_loss(&student, &top, &labels, None).unwrap()),
        bits(fused.f_loss(&student, &unchecked, &labels, None).unwrap())
    );
    let chunked = |teacher: &TopKTail| {
        bits(ChunkedLoss::new(2).f_loss(&h, &w, &ChunkedTarget::TopK { teacher, criterion: kd }, None).unwrap())
    };
    assert_eq!(chunked(&top), chunked(&unchecked));
    // Unchecked, the parts are read at any temperature, as before.
    assert!(TopKKl::new(OTHER).f_loss_masked(&student, &unchecked, None).unwrap().double_value(&[]).is_finite());

    let all = TopKTail::f_encode(&teacher, V, ENCODED).unwrap();
    let got = kd.f_loss_masked(&student, &all, None).unwrap().double_value(&[]);
    let full = SequenceKd::new(Divergence::ForwardKl, ENCODED).f_loss_masked(&student, &teacher, None).unwrap();
    // The same 40 terms per token summed in another order, in f64: |Δ| ≤ ε₆₄·40·(a few units).
    assert!((got - full.double_value(&[])).abs() < 1e-13, "{got} vs {full}");
    assert!(got > 0.1, "a KL of unrelated logits: {got}");
}

#[test]
fn a_sampled_encoding_at_another_temperature_is_refused_and_at_its_own_read_as_before() {
    let (_, _, student, teacher) = inputs();
    let sampled = SampledLogits::f_encode(&teacher, 6, ENCODED, 1.5, 7).unwrap();
    assert_eq!(sampled.temperature, Some(ENCODED));
    assert_mismatch(SampledKl::new(OTHER).f_per_token(&student, &sampled).unwrap_err(), Packed::Sampled);
    assert_mismatch(SampledKl::new(OTHER).f_loss_masked(&student, &sampled, None).unwrap_err(), Packed::Sampled);

    let unchecked = SampledLogits {
        ids: sampled.ids.shallow_clone(),
        log_probs: sampled.log_probs.shallow_clone(),
        weights: sampled.weights.shallow_clone(),
        temperature: None,
    };
    let kd = SampledKl::new(ENCODED);
    let got = kd.f_loss_masked(&student, &sampled, None).unwrap();
    assert!(got.equal(&kd.f_loss_masked(&student, &unchecked, None).unwrap()));
    // The estimate itself: Σ w (log p − log q) per token, mean over tokens, recomputed here.
    let log_q = (&student / ENCODED).log_softmax(-1, Kind::Double).gather(-1, &sampled.ids, false);
    let want = (&sampled.weights * (&sampled.log_probs - log_q)).sum_dim_intlist(-1, false, Kind::Double).mean(None);
    // The same operations in f64, up to the order of a 6-term sum: |Δ| ≤ ε₆₄·6·(a few units).
    assert!((got.double_value(&[]) - want.double_value(&[])).abs() < 1e-13);
    assert!(SampledKl::new(OTHER).f_loss_masked(&student, &unchecked, None).unwrap().double_value(&[]).is_finite());
}

/// The packed tensor a pair reads through `Criterion` does not hold the temperature: read back, it
/// is `None` and unchecked, as before (a teacher cache checks the pair's criterion instead).
#[test]
fn a_packed_encoding_does_not_carry_its_temperature() {
    use distill::criterion::Criterion;
    let (_, _, student, teacher) = inputs();
    let top = TopKTail::f_encode(&teacher, 7, ENCODED).unwrap();
    let packed = top.f_pack().unwrap();
    let at_other = TopKKl::new(OTHER).f_loss(&student, &packed).unwrap();
    let want = TopKKl::new(OTHER).f_loss_masked(&student, &without_temperature(&top), None).unwrap();
    assert_eq!(at_other.double_value(&[]).to_bits(), want.double_value(&[]).to_bits());
}

/// A token cache's batches carry the manifest's temperature, on any device: the cached encoding is
/// refused at another temperature and read at its own as the live one.
#[test]
fn a_token_cache_batch_carries_the_stored_temperature() {
    const SEQUENCES: usize = 4;
    for encoding in [TokenEncoding::top_k(5, ENCODED), TokenEncoding::sampled(4, ENCODED, 1.0, 3)] {
        let encoding = encoding.with_values(Precision::F32);
        let dir = std::env::temp_dir().join(format!("distill-encoding-temperature-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sequences: Vec<Vec<u32>> =
            (0..SEQUENCES as u32).map(|s| (0..T as u32).map(|t| s * 7 + t).collect()).collect();
        let spec = TokenCacheSpec {
            teacher: TeacherHash::from_text("sha256:a-teacher"),
            tokenizer: TokenCacheSpec::tokenizer_identity(b"{}"),
            dataset: TokenCacheSpec::dataset_identity(&sequences),
            num_sequences: SEQUENCES,
            seq_len: T,
            vocab: V,
            encoding,
        };
        let logits = |ids: &[usize]| {
            let rows: Vec<Tensor> = ids
                .iter()
                .map(|&id| Tensor::arange(T * V, (Kind::Float, Device::Cpu)).view([T, V]).sin() * (3.0 + id as f64))
                .collect();
            Tensor::stack(&rows, 0)
        };
        TokenCacheWriter::new(&dir, spec)
            .shards(1)
            .write(2, |ids| -> distill::Result<(Tensor, Option<Tensor>)> { Ok((logits(ids), None)) })
            .unwrap();
        let batch = TokenCache::open(&dir).unwrap().batch(&[1, 3]).unwrap();
        let student = Tensor::randn([2, T, V], (Kind::Float, Device::Cpu));
        for batch in [batch.to_device(Device::Cpu).unwrap(), batch] {
            if let Ok(top) = batch.top_k() {
                assert_eq!(top.temperature, Some(ENCODED));
                let err = TopKKl::new(OTHER).f_loss_masked(&student, top, Some(batch.valid())).unwrap_err();
                assert_mismatch(err, Packed::TopKTail);
                let live = TopKTail::f_encode(&logits(&[1, 3]), 5, ENCODED).unwrap();
                let kd = TopKKl::new(ENCODED);
                let cached = kd.f_loss_masked(&student, top, Some(batch.valid())).unwrap();
                // The f32 cache stores the live encoding exactly: the same loss, bit for bit.
                assert!(cached.equal(&kd.f_loss_masked(&student, &live, Some(batch.valid())).unwrap()));
            } else {
                let sampled = batch.sampled().unwrap();
                assert_eq!(sampled.temperature, Some(ENCODED));
                let err = SampledKl::new(OTHER).f_loss_masked(&student, sampled, Some(batch.valid())).unwrap_err();
                assert_mismatch(err, Packed::Sampled);
                let unchecked = SampledLogits {
                    ids: sampled.ids.shallow_clone(),
                    log_probs: sampled.log_probs.shallow_clone(),
                    weights: sampled.weights.shallow_clone(),
                    temperature: None,
                };
                let kd = SampledKl::new(ENCODED);
                let value = kd.f_loss_masked(&student, sampled, Some(batch.valid())).unwrap();
                assert!(value.equal(&kd.f_loss_masked(&student, &unchecked, Some(batch.valid())).unwrap()));
                assert!(value.double_value(&[]).abs() > 1e-3, "an estimate of a KL of unrelated logits");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
