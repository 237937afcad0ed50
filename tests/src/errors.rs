//! Checks of error chains: every layer prints its own message once.

use std::error::Error;

/// The `Display` text of `e` and of every error below it in the `source()` chain, outermost
/// first.
///
/// ```
/// let e = std::io::Error::other("disk full");
/// assert_eq!(kvtk_tests::error_layers(&e), vec!["disk full".to_string()]);
/// ```
pub fn error_layers(e: &(dyn Error + 'static)) -> Vec<String> {
    std::iter::successors(Some(e), |e| (*e).source())
        .map(ToString::to_string)
        .collect()
}

/// The layers of `e` (see [`error_layers`]), after checking that no layer copies the text of
/// the layer below it, so that `{:#}`-style chains (anyhow, `tracing`) print each cause once.
///
/// # Panics
/// When a layer's text is empty or contains the next layer's text (a test failure).
pub fn assert_one_layer_each(e: &(dyn Error + 'static)) -> Vec<String> {
    let layers = error_layers(e);
    for pair in layers.windows(2) {
        assert!(
            !pair[0].is_empty() && !pair[0].contains(pair[1].as_str()),
            "error layer {:?} repeats its cause {:?}; chain: {layers:?}",
            pair[0],
            pair[1]
        );
    }
    layers
}
