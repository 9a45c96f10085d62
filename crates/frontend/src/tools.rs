//! The GPT-OSS tool executors (`mlx-harmony-tools`) as the engine's
//! [`ToolRunner`], and a prompt setup that declares them.

use mlx_harmony_core::distributed;
use mlx_harmony_core::prompt::PromptSetup;
use mlx_harmony_core::turn::{ToolOutput, ToolRunner};
use mlx_harmony_tools::ToolBox;

/// A conversation's [`ToolBox`] running the calls of the engine's tool loop.
pub struct Runner<'a>(pub &'a mut ToolBox);

impl ToolRunner for Runner<'_> {
    fn handles(&self, recipient: &str) -> bool {
        self.0.handles(recipient)
    }

    fn run(&mut self, recipient: &str, arguments: &str) -> ToolOutput {
        let Some(group) = distributed::tensor_parallel() else {
            let output = self.0.execute(recipient, arguments);
            return ToolOutput {
                author: output.author,
                content: output.content,
            };
        };
        // Tensor-parallel ranks reach each call together (their tokens are
        // rank 0's): rank 0 runs it, once, and hands the others its output.
        let mine = (group.rank() == 0).then(|| {
            let output = self.0.execute(recipient, arguments);
            format!("{}\0{}", output.author, output.content).into_bytes()
        });
        let shared = match group.share_bytes(mine.as_deref()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("{recipient}\0error: the tool's output did not reach this rank: {e}"),
        };
        let (author, content) = shared.split_once('\0').unwrap_or((recipient, &shared));
        ToolOutput {
            author: author.to_string(),
            content: content.to_string(),
        }
    }
}

/// Declares the enabled tools to the model: the built-in ones (browser,
/// python) in the system message, apply_patch among the functions.
pub fn declare(setup: &mut PromptSetup, tools: &ToolBox) {
    setup.builtin_tools = tools.builtin_namespaces();
    setup.functions.extend(tools.functions());
}
