include!("common/models.rs");

distill! {
    struct Kd for Net => Net {}
}

fn main() {}
