//! The capture-point boilerplate shared by every single layer of `distill::nn`.

/// Implements `Distillable` (a leaf that records itself), `Recordable` and `StaticSchema` for a layer type with a
/// `tap: TapId` field.
macro_rules! tappable_leaf {
    ($ty:ident $(<$param:ident>)?) => {
        impl$(<$param: 'static>)? $crate::module::Distillable for $ty$(<$param>)? {
            fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut($crate::module::Child<'a>)) {}
            fn own_tap(&self) -> Option<$crate::nn::capture::TapId> {
                Some(self.tap)
            }
            fn as_any(&self) -> Option<&dyn ::std::any::Any> {
                Some(self)
            }
        }
        impl$(<$param: 'static>)? $crate::module::Recordable for $ty$(<$param>)? {
            fn tap_id(&self) -> $crate::nn::capture::TapId {
                self.tap
            }
        }
        impl$(<$param: 'static>)? $crate::schema::StaticSchema for $ty$(<$param>)? {
            const SCHEMA: $crate::schema::Schema = $crate::schema::Schema::leaf(true);
        }
    };
}

/// Also implements `Deref`/`DerefMut` to the wrapped tch layer (field `inner`), `from_tch` and
/// `into_inner`, for layers that wrap one.
///
/// With `config: $cfg`, the layer also keeps the config it was built with (field `config:
/// Option<$cfg>`), because tch's layers keep theirs private; `from_tch_with_config` and `config()`
/// are added, and `from_tch` leaves the config unknown.
macro_rules! tch_wrapper {
    ($ty:ident $(<$param:ident>)?, $inner:ty) => {
        $crate::nn::leaf::tappable_leaf!($ty $(<$param>)?);
        impl$(<$param>)? $ty$(<$param>)? {
            /// Wraps a tch layer, giving it a fresh tap.
            pub fn from_tch(inner: $inner) -> Self {
                Self { inner, tap: $crate::nn::capture::TapId::fresh() }
            }
        }
        $crate::nn::leaf::tch_deref!($ty $(<$param>)?, $inner);
    };
    ($ty:ident $(<$param:ident>)?, $inner:ty, config: $cfg:ty) => {
        $crate::nn::leaf::tappable_leaf!($ty $(<$param>)?);
        impl$(<$param>)? $ty$(<$param>)? {
            /// Wraps a tch layer, giving it a fresh tap. tch keeps a layer's config private, so the
            /// wrapper does not know it ([`config`](Self::config) is `None`) and operations that need it
            /// (e.g. `distill::prune`) return an error: prefer [`from_tch_with_config`](Self::from_tch_with_config).
            pub fn from_tch(inner: $inner) -> Self {
                Self { inner, tap: $crate::nn::capture::TapId::fresh(), config: None }
            }
            /// Wraps a tch layer built with `config`, giving it a fresh tap.
            pub fn from_tch_with_config(inner: $inner, config: $cfg) -> Self {
                Self { inner, tap: $crate::nn::capture::TapId::fresh(), config: Some(config) }
            }
            /// The config the layer was built with; `None` when it was wrapped with `from_tch`.
            pub fn config(&self) -> Option<&$cfg> {
                self.config.as_ref()
            }
        }
        $crate::nn::leaf::tch_deref!($ty $(<$param>)?, $inner);
    };
}

/// `Deref`/`DerefMut` to the wrapped tch layer (field `inner`) and `into_inner`.
macro_rules! tch_deref {
    ($ty:ident $(<$param:ident>)?, $inner:ty) => {
        impl$(<$param>)? $ty$(<$param>)? {
            /// The wrapped tch layer.
            pub fn into_inner(self) -> $inner {
                self.inner
            }
        }
        impl$(<$param>)? std::ops::Deref for $ty$(<$param>)? {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.inner
            }
        }
        impl$(<$param>)? std::ops::DerefMut for $ty$(<$param>)? {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.inner
            }
        }
    };
}

pub(crate) use {tappable_leaf, tch_deref, tch_wrapper};
