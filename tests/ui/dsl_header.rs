include!("common/models.rs");

distill! {
    pub struct Kd Net => Net {
        student => teacher with |s, t| (s - t).square().mean(None);
    }
}

distill! {
    pub struct Kd2<T> for Net => Net {
        student => teacher with |s, t| (s - t).square().mean(None);
    }
}

distill! {
    pub struct Kd3 for Net => Net {
        student => teacher with |s, t| (s - t).square().mean(None);
    }
    struct Another;
}

distill! {}

fn main() {}
