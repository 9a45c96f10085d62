//! A plain-text model's constraint: the whole reply follows the grammar,
//! and ends (an end-of-output token) only where the grammar may end.

use llguidance::Matcher;
use mlx_harmony_core::Result;
use mlx_harmony_core::sampling::TokenConstraint;

use crate::mask::engine_error;

pub struct WholeOutput {
    start: Matcher,
    matcher: Matcher,
}

impl WholeOutput {
    pub fn new(matcher: Matcher) -> Self {
        WholeOutput {
            start: matcher.deep_clone(),
            matcher,
        }
    }
}

impl TokenConstraint for WholeOutput {
    fn consume(&mut self, token: u32) -> Result<()> {
        self.matcher.consume_token(token).map_err(engine_error)
    }

    fn allowed(&mut self) -> Result<Option<Vec<u32>>> {
        // A stopped grammar's mask is the end-of-output tokens; an accepting
        // one's mask lets them in beside what may follow.
        let mask = self.matcher.compute_mask_or_eos().map_err(engine_error)?;
        Ok(Some(mask.as_slice().to_vec()))
    }

    fn reset(&mut self) -> Result<()> {
        self.matcher = self.start.deep_clone();
        Ok(())
    }

    fn fresh(&self) -> Box<dyn TokenConstraint> {
        Box::new(WholeOutput::new(self.start.deep_clone()))
    }
}
