"""Stage 2, supervised instruction tuning: a pretrained GPT learns to answer requests.

Read in this order:
- template.py: the chat format `<bos> <|user|> prompt <|assistant|> response <eos>` and its loss
  mask (only the response and `<eos>` are trained on);
- sft.py: batches of conversations and the masked loss, fed to the same training loop as stage 1;
- evaluate.py: greedy answers scored per family and per test split, against the base model,
  SFT from scratch and single-family SFT;
- chat.py: a terminal conversation with the result.
"""

from minillm.stage2_sft.chat import chat_loop
from minillm.stage2_sft.evaluate import evaluate_model, format_table, generate_answers, run_sft_with_baselines
from minillm.stage2_sft.sft import sft_loss, train_sft
from minillm.stage2_sft.template import decode_response, encode_example, encode_prompt, encode_records

__all__ = [
    "chat_loop", "decode_response", "encode_example", "encode_prompt", "encode_records", "evaluate_model",
    "format_table", "generate_answers", "run_sft_with_baselines", "sft_loss", "train_sft",
]
