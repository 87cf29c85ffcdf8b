//! A user's first crate: a small model, a `distill!` declaration, a dynamic `Mapping`, the same
//! pairs as a `Distillation` built from a `Mapping` of criteria, one training step, a scheduled
//! payload's loss at a step, a pruned conv through the selection adapter (with a builder option, in
//! `distill!` and by hand), one selection adapter shared by two pairs, the teacher side written to a
//! teacher cache and read back, and a token cache written from a closure's logits and read back.
//! Exits non-zero (with the error) when anything is off.
use distill::cache::{
    CacheWriter, TeacherCache, TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding,
};
use distill::prelude::*;
use distill::prune::prune_conv2d;
use tch::nn::{Module, ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Distillable)]
struct Net {
    body: nn::Seq<nn::Linear>,
    head: nn::Linear,
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.body.forward_t(xs, train).relu())
    }
}

fn net(p: nn::Path, width: i64) -> Net {
    let body = (0..2).map(|i| nn::linear(&p / "body" / i, if i == 0 { 8 } else { width }, width, Default::default()));
    Net { body: body.collect(), head: nn::linear(&p / "head", width, 3, Default::default()) }
}

distill! {
    /// Feature and logit distillation between two small MLPs.
    struct Kd for Net => Net {
        hidden: student.body[1] => teacher.body[1] with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

distill! {
    /// The same pairs with the teacher side read from a teacher cache.
    struct CachedKd for Net => TeacherCache {
        hidden: student.body[1] => teacher["body.1"] with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

/// One conv: the teacher, and its channel-pruned copy as the student.
#[derive(Debug, Distillable)]
struct OneConv {
    conv: nn::Conv2D,
}

impl Module for OneConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv)
    }
}

distill! {
    /// The pruned conv against its teacher through the selection adapter, whose builder takes an
    /// option after the call.
    struct PrunedKd for OneConv => OneConv {
        c: student.conv => conv2d_adapter(teacher.conv).tolerance(Tolerance::EXACT) with Mse;
    }
}

fn fail(message: String) -> DistillError {
    DistillError::InvalidArgument(message)
}

/// The selection adapter from outside the workspace: before training it selects exactly the
/// teacher channels the student kept, in `distill!` and built by hand.
fn pruned(vs: &VarStore) -> Result<(), DistillError> {
    let config = nn::ConvConfig { padding: 1, ..Default::default() };
    let teacher = OneConv { conv: nn::conv2d(vs.root() / "conv_teacher", 3, 6, 3, config) };
    let student = OneConv { conv: prune_conv2d(vs.root() / "conv_student", &teacher.conv, &[4, 1, 5], None)? };
    let xs = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
    let kept = teacher.forward(&xs).index_select(1, &Tensor::from_slice(&[4i64, 1, 5]));
    let kd = PrunedKd::new(vs.root() / "pruned_kd", &student, &teacher)?;
    let out = kd.forward_t(&xs, false)?;
    if !out.c.teacher.equal(&kept) || !out.c.student.equal(&student.forward(&xs)) {
        return Err(fail("distill!'s selection adapter does not select the kept channels".into()));
    }
    let adapter =
        conv2d_adapter(vs.root() / "by_hand", &teacher.conv, &student.conv).tolerance(Tolerance::EXACT).build()?;
    if adapter.mapping().output != [4, 1, 5] || !adapter.forward(&teacher.forward(&xs)).equal(&kept) {
        return Err(fail(format!("the hand-built adapter selects {:?}", adapter.mapping().output)));
    }
    println!("conv2d_adapter: selects the kept channels {:?}", adapter.mapping().output);
    Ok(())
}

/// One selection adapter, by reference, on the teacher side of two pairs: each pair's teacher
/// tensor is the teacher's features the student kept.
fn shared_adapter(vs: &VarStore, teacher: &Net, xs: &Tensor) -> Result<(), DistillError> {
    let student = net(vs.root() / "narrow", 4);
    let kept = [3i64, 7, 11, 15];
    let selection = linear_selection_adapter(vs.root() / "selection", 16, &kept)?;
    let mut mapping = Mapping::new(&student, teacher);
    mapping.add("body.0", "body.0", Adapted::new(Mse).teacher_adapter(&selection))?;
    mapping.add("body.1", "body.1", Adapted::new(Mse).teacher_adapter(&selection))?;
    let kd = Distillation::from_mapping(&student, mapping)?;
    let out = kd.forward_t(xs, false)?;
    let first = teacher.body[0].forward(xs);
    let wanted = [first.shallow_clone(), teacher.body[1].forward(&first)];
    let columns = Tensor::from_slice(&kept);
    for (pair, full) in out.pairs.iter().zip(&wanted) {
        if !pair.teacher.equal(&full.index_select(1, &columns)) {
            return Err(fail(format!("the shared adapter of `{}` does not select {kept:?}", pair.label())));
        }
    }
    println!("shared adapter: {} pairs select the kept features {kept:?}", out.pairs.len());
    Ok(())
}

/// A token cache of a teacher's top-3 per token, written from a closure that gives `(logits, mask)`
/// for each batch of sequence ids, and read back.
fn token_cache(vs: &VarStore) -> Result<(), DistillError> {
    let (sequences, seq_len, vocab) = (4usize, 5i64, 11i64);
    let logits = |ids: &[usize]| {
        let rows: Vec<Tensor> = ids
            .iter()
            .map(|&id| {
                Tensor::arange(seq_len * vocab, (Kind::Float, Device::Cpu)).view([seq_len, vocab]) * (id as f64 + 1.0)
                    / 10.0
            })
            .collect();
        Tensor::stack(&rows, 0)
    };
    let spec = TokenCacheSpec {
        teacher: TeacherHash::of_var_store(vs)?,
        tokenizer: "user-tokenizer".into(),
        dataset: TokenCacheSpec::dataset_identity([[1u32, 2, 3]]),
        num_sequences: sequences,
        seq_len,
        vocab,
        encoding: TokenEncoding::top_k(3, 1.0),
    };
    let dir = std::env::temp_dir().join(format!("distill-user-tokens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TokenCacheWriter::new(&dir, spec.clone()).shards(2).write(3, |ids| Ok((logits(ids), None)))?;
    let cache = TokenCache::open(&dir)?;
    cache.check(&spec)?;
    let batch = cache.batch(&[2, 0])?;
    let top = batch.top_k()?;
    let _ = std::fs::remove_dir_all(&dir);
    // Logits rise along the vocabulary: the top 3 are the last three ids, in descending order.
    let wanted = Tensor::from_slice(&[10i64, 9, 8]).expand([2, seq_len, 3], false);
    if !top.ids.equal(&wanted) {
        return Err(fail(format!("the token cache's top ids are {:?}", Vec::<i64>::try_from(top.ids.view([-1]))?)));
    }
    println!("TokenCache: {} sequences, top-3 ids read back", cache.sequences().len());
    Ok(())
}

fn main() -> Result<(), DistillError> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (net(vs.root() / "student", 16), net(vs.root() / "teacher", 16));
    let xs = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
    let ys = Tensor::from_slice(&[0i64, 1, 2, 0]);

    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.1)?;
    let out = kd.forward_t(&xs, true)?;
    let loss = out.student_output.cross_entropy_for_logits(&ys) + out.loss();
    println!("distill!: {}", out.losses());
    opt.backward_step(&loss);

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("body.1", "body.1", ())?;
    mapping.add("", "", ())?;
    let model = distill(&student, &teacher, mapping);
    let output = model.forward_t(&xs, false)?;
    for (s, t, ()) in output.pairs() {
        if s.size() != t.size() {
            return Err(fail(format!("pair shapes {:?} vs {:?}", s.size(), t.size())));
        }
    }
    println!("Mapping: {} pairs, student output {:?}", output.len(), output.student_output.size());

    // The same pairs with criteria as payloads: the runtime `distill!` runs, with the same losses.
    let mut criteria: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    criteria.add(student.body.slot(1), teacher.body.slot(1), Box::new(Mse))?;
    criteria.add("", "", Box::new(KlDiv::new(4.0)))?;
    let dynamic = Distillation::from_mapping(&student, criteria)?;
    let (typed, untyped) = (kd.forward_t(&xs, false)?.f_loss()?, dynamic.forward_t(&xs, false)?.f_loss()?);
    if typed.double_value(&[]) != untyped.double_value(&[]) {
        return Err(fail(format!("distill! loss {typed} vs Distillation loss {untyped}")));
    }
    println!("Distillation::from_mapping: {}", dynamic.forward_t(&xs, false)?.f_losses()?);

    // A scheduled payload has no loss without a step; at step 5 of a 10-step warm-up it is half the
    // criterion's.
    let mut scheduled: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    scheduled.add("body.1", "body.1", Box::new(Mse * Schedule::warmup(0.0, 1.0, 10)))?;
    let model = distill(&student, &teacher, scheduled);
    let output = model.forward_t(&xs, false)?;
    let (s, t, payload) = output.get(0).ok_or_else(|| fail("no pair".into()))?;
    if payload.f_loss(s, t).is_ok() || !payload.loss_at(5, s, t, None).equal(&(Mse.loss(s, t) * 0.5)) {
        return Err(fail("a scheduled payload's loss_at(5) is not half its criterion's".into()));
    }
    pruned(&vs)?;
    shared_adapter(&vs, &teacher, &xs)?;
    token_cache(&vs)?;

    // The teacher's side stored once (f32) and read back: the same loss, bit for bit.
    let dir = std::env::temp_dir().join(format!("distill-user-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    CacheWriter::new(&dir, TeacherHash::of_var_store(&vs)?).write(kd.distillation(), &teacher, &xs)?;
    let cache = TeacherCache::open(&dir)?;
    let cached = CachedKd::new(vs.root() / "cached", &student, &cache)?;
    let batch = cache.batch(&Tensor::from_slice(&[0i64, 1, 2, 3]), 0)?;
    let (live, stored) = (kd.forward_t(&xs, false)?.f_loss()?, cached.forward_cached(&xs, &batch, false)?.f_loss()?);
    let _ = std::fs::remove_dir_all(&dir);
    if live.double_value(&[]) != stored.double_value(&[]) {
        return Err(fail(format!("live loss {live} vs cached loss {stored}")));
    }
    println!("TeacherCache: the cached loss equals the live one ({})", stored.double_value(&[]));
    Ok(())
}
