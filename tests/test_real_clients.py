"""LSTMOptimizer inside the frameworks users train with: Hugging Face Trainer, accelerate, Lightning.

Each test checkpoints half-way through a short run, resumes in a fresh process-like setup (new
model, new optimizer, new framework object) and requires the resumed parameters to equal the
uninterrupted run's bit for bit. The packages come with the ``dev`` extra; a missing one skips.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optizoo.optim import LSTMOptimizer


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------- Hugging Face Trainer


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 16, length: int = 8, vocab: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_hf_trainer_with_our_optimizer_and_scheduler_resumes_bit_identically(tmp_path):
    transformers = pytest.importorskip("transformers")

    def run(out, max_steps, resume=None):
        transformers.set_seed(0)
        config = transformers.LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=16,
        )
        model = transformers.AutoModelForCausalLM.from_config(config)  # random, no download
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = LSTMOptimizer(  # HF's grouping: decay for matrices, none for norms and biases
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
        )
        sched = transformers.get_linear_schedule_with_warmup(opt, 1, 4)
        args = transformers.TrainingArguments(
            output_dir=str(out),
            max_steps=max_steps,
            per_device_train_batch_size=4,
            save_steps=2,
            save_strategy="steps",
            report_to=[],
            use_cpu=True,
            seed=0,
            logging_steps=100,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=_Tokens(), optimizers=(opt, sched)
        )
        trainer.train(resume_from_checkpoint=resume)
        return model, opt

    full, full_opt = run(tmp_path / "full", 4)
    assert isinstance(full_opt, LSTMOptimizer)
    run(tmp_path / "half", 2)
    resumed, _ = run(tmp_path / "resumed", 4, resume=str(tmp_path / "half" / "checkpoint-2"))
    assert _same(full, resumed)


# --------------------------------------------------------------------------- accelerate


def test_accelerate_save_state_load_state_resumes_bit_identically(tmp_path):
    accelerate = pytest.importorskip("accelerate")

    def setup():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        acc = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
        model, opt = acc.prepare(model, LSTMOptimizer(model.parameters()))
        return acc, model, opt

    def train(acc, model, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            with acc.accumulate(model):
                x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
                acc.backward(((model(x) - y) ** 2).mean())
                opt.step()
                opt.zero_grad()

    acc, full, opt = setup()
    train(acc, full, opt, 4, seed=1)
    acc.save_state(str(tmp_path / "ckpt"))
    train(acc, full, opt, 4, seed=2)

    acc2, resumed, opt2 = setup()
    acc2.load_state(str(tmp_path / "ckpt"))
    train(acc2, resumed, opt2, 4, seed=2)
    assert _same(full, resumed)


# --------------------------------------------------------------------------- Lightning


def test_lightning_resume_from_checkpoint_is_bit_identical(tmp_path):
    L = pytest.importorskip("lightning.pytorch")

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

        def training_step(self, batch, _):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self):
            opt = LSTMOptimizer(self.parameters())
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # every batch is the same 4 samples: a plain DataLoader cannot resume mid-epoch (Lightning
    # restarts it), so identical batches keep the resumed run's data equal to the full run's
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 4, generator=g), torch.randn(4, 1, generator=g)
    data = torch.utils.data.TensorDataset(x.repeat(4, 1), y.repeat(4, 1))

    def trainer(max_steps, **kw):
        return L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            gradient_clip_val=1.0,
            default_root_dir=str(tmp_path),
            **kw,
        )

    def loader():
        return torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)

    full = Module()
    trainer(4, enable_checkpointing=False).fit(full, loader())
    half = Module()
    t = trainer(2, enable_checkpointing=False)
    t.fit(half, loader())
    t.save_checkpoint(str(tmp_path / "half.ckpt"))
    resumed = Module()
    trainer(4, enable_checkpointing=False).fit(
        resumed, loader(), ckpt_path=str(tmp_path / "half.ckpt"), weights_only=True
    )
    assert _same(full, resumed)
