//! The GPT-OSS tool executors (`mlx-harmony-tools`) as the engine's
//! [`ToolRunner`], and a prompt setup that declares them.

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
        let output = self.0.execute(recipient, arguments);
        ToolOutput {
            author: output.author,
            content: output.content,
        }
    }
}

/// Declares the enabled tools to the model: the built-in ones (browser,
/// python) in the system message, apply_patch among the functions.
pub fn declare(setup: &mut PromptSetup, tools: &ToolBox) {
    setup.builtin_tools = tools.builtin_namespaces();
    setup.functions.extend(tools.functions());
}
