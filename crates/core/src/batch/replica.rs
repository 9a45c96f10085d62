//! Tensor parallelism for a batch: rank 0, which takes the requests, hands
//! the other ranks what changed before each step, so that every rank runs
//! the same step.

use std::collections::HashMap;

use crate::distributed::{self, Group};
use crate::generate::{Cancel, GenerateOptions};
use crate::sampling::{Sampler, SamplerShape};
use crate::{Error, Result};

use super::{BatchGenerator, SequenceId, SequenceRequest};

/// Under tensor parallelism every rank runs the same batch, since every
/// step's graph must be the same on all of them: rank 0, which takes the
/// requests, hands the others at each step the sequences added since the
/// last one and those cancelled ([`BatchGenerator::follow`] on theirs).
/// Cancellations are read only then, so that every rank drops a sequence
/// at the same step; tokens are rank 0's ([`crate::distributed::agree`]).
pub(super) struct Replica {
    pub(super) group: &'static Group,
    /// Rank 0: the sequences added since the last step, as the others make
    /// them.
    pub(super) added: Vec<SharedSequence>,
    /// Each unfinished sequence's flag as its caller holds it (rank 0), and
    /// the one the batch reads.
    pub(super) cancels: HashMap<SequenceId, (Cancel, Cancel)>,
}

impl Replica {
    /// Rank 0: hands `tick` to the other ranks ([`BatchGenerator::follow`]
    /// reads it).
    fn send(&self, tick: &Tick) -> Result<()> {
        let bytes = serde_json::to_vec(tick).map_err(|e| Error::Invalid(e.to_string()))?;
        self.group.share_bytes(Some(&bytes))?;
        Ok(())
    }
}

/// A sequence as rank 0 hands it to the others: what makes their rows run
/// the same operations.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SharedSequence {
    pub(super) id: SequenceId,
    pub(super) prompt: Vec<u32>,
    pub(super) sampler: SamplerShape,
    pub(super) options: GenerateOptions,
}

/// What rank 0 hands the others before a step (`done`: there will be no
/// more).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Tick {
    added: Vec<SharedSequence>,
    cancelled: Vec<SequenceId>,
    done: bool,
}

impl BatchGenerator {
    /// Under tensor parallelism, keeps this batch in step with the other
    /// ranks' (see `Replica`): on rank 0, each step first hands them what
    /// changed; on the others, [`BatchGenerator::follow`] applies it. For a
    /// program whose other ranks do not run the same calls themselves (the
    /// server: rank 0 alone takes requests); a program that every rank runs
    /// alike needs none of it. Does nothing without tensor parallelism; an
    /// error once sequences were added.
    pub fn replicate(&mut self) -> Result<()> {
        if self.next_id > 0 {
            return Err(Error::Invalid(
                "a batch is replicated before its first sequence".into(),
            ));
        }
        self.replica = distributed::tensor_parallel().map(|group| Replica {
            group,
            added: Vec::new(),
            cancels: HashMap::new(),
        });
        Ok(())
    }

    /// Rank 0 of a tensor-parallel group: hands the others what changed
    /// since the last step (see `Replica`). Nothing to do elsewhere.
    pub(super) fn lead(&mut self) -> Result<()> {
        let Some(replica) = &mut self.replica else {
            return Ok(());
        };
        if replica.group.rank() != 0 {
            return Ok(());
        }
        let mut cancelled = Vec::new();
        for (&id, (outside, inside)) in &replica.cancels {
            if outside.is_cancelled() && !inside.is_cancelled() {
                inside.cancel();
                cancelled.push(id);
            }
        }
        cancelled.sort_unstable();
        let tick = Tick {
            added: std::mem::take(&mut replica.added),
            cancelled,
            done: false,
        };
        replica.send(&tick)
    }

    /// A tensor-parallel rank other than 0: takes rank 0's changes, applies
    /// them and runs the same step as rank 0 (its events are rank 0's to
    /// report). `false` once rank 0 said it is done
    /// ([`BatchGenerator::release_followers`]).
    pub fn follow(&mut self) -> Result<bool> {
        let group = match &self.replica {
            Some(replica) if replica.group.rank() != 0 => replica.group,
            _ => {
                return Err(Error::Invalid(
                    "only a replicated batch of a tensor-parallel rank other than 0 follows \
                     rank 0's (BatchGenerator::replicate)"
                        .into(),
                ));
            }
        };
        let bytes = group.share_bytes(None)?;
        let tick: Tick = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("rank 0's step could not be read: {e}")))?;
        if tick.done {
            return Ok(false);
        }
        for shared in tick.added {
            let id = self.add(SequenceRequest {
                prompt: shared.prompt,
                sampler: Sampler::follower(shared.sampler)?,
                options: shared.options,
                cancel: Cancel::new(),
            });
            if id != shared.id {
                return Err(Error::Invalid(format!(
                    "tensor-parallel ranks disagree: sequence {id} here is {} on rank 0",
                    shared.id
                )));
            }
        }
        if let Some(replica) = &self.replica {
            for id in tick.cancelled {
                if let Some((_, inside)) = replica.cancels.get(&id) {
                    inside.cancel();
                }
            }
        }
        self.step()?;
        Ok(true)
    }

    /// Rank 0 of a tensor-parallel group: tells the others there will be no
    /// more steps, so that their [`BatchGenerator::follow`] returns `false`.
    pub fn release_followers(&mut self) -> Result<()> {
        if let Some(replica) = &self.replica
            && replica.group.rank() == 0
        {
            replica.send(&Tick {
                done: true,
                ..Tick::default()
            })?;
        }
        Ok(())
    }
}
