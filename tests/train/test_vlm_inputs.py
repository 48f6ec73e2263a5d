import pytest
import torch
from PIL import Image

from bettersynth.data.llava import LlavaRecordError
from bettersynth.vlm.inputs import IGNORE_INDEX, LlavaCollator, LlavaDataset, pad_to_square

N_IMAGE_TOKENS = 16  # 32 px / patch 8 -> 4 x 4, CLS dropped


def labelled_runs(example, tokenizer) -> list[str]:
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for token in example["labels"].tolist() + [IGNORE_INDEX]:
        if token != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current).strip())
            current = []
    return runs


def test_plain_template_labels_only_the_caption(caption_records, image_root, processor):
    dataset = LlavaDataset(caption_records, image_root, processor, "plain", max_length=2048)
    example = dataset[3]
    tok = processor.tokenizer
    caption = caption_records[3]["conversations"][1]["value"]
    assert labelled_runs(example, tok) == [caption + "</s>"]
    assert tok.decode(example["input_ids"]) == "<s>" + "<image>" * N_IMAGE_TOKENS + caption + "</s>"
    # Labels are the input ids where set (the model shifts them), and never image tokens.
    mask = example["labels"] != IGNORE_INDEX
    assert torch.equal(example["labels"][mask], example["input_ids"][mask])
    image_id = tok.convert_tokens_to_ids("<image>")
    assert int((example["input_ids"] == image_id).sum()) == N_IMAGE_TOKENS
    assert (example["labels"][example["input_ids"] == image_id] == IGNORE_INDEX).all()
    assert example["pixel_values"].shape == (3, 32, 32)


def test_chat_template_labels_only_assistant_replies(chat_records, image_root, processor):
    dataset = LlavaDataset(chat_records, image_root, processor, "chat", max_length=2048)
    example = dataset[5]
    record = chat_records[5]
    tok = processor.tokenizer
    replies = [t["value"] for t in record["conversations"] if t["from"] == "gpt"]
    assert labelled_runs(example, tok) == [r + "</s>" for r in replies]
    expected_text = (
        "<s>USER: " + "<image>" * N_IMAGE_TOKENS + f"\n{record['conversations'][0]['value'].split(chr(10))[1]}\n"
        f"ASSISTANT: {replies[0]}</s>\nUSER: What color is it?\nASSISTANT: {replies[1]}</s>\n"
    )
    assert tok.decode(example["input_ids"]) == expected_text
    n_labelled = int((example["labels"] != IGNORE_INDEX).sum())
    assert n_labelled == sum(len(tok(" " + r + "</s>", add_special_tokens=False)["input_ids"]) for r in replies)


def test_truncation_keeps_labels_aligned_and_refuses_to_cut_images(caption_records, image_root, processor):
    full = LlavaDataset(caption_records, image_root, processor, "plain", max_length=2048)[0]
    cut = LlavaDataset(caption_records, image_root, processor, "plain", max_length=20)[0]
    assert len(cut["input_ids"]) == len(cut["labels"]) == 20 < len(full["input_ids"])
    assert torch.equal(cut["labels"], full["labels"][:20])
    with pytest.raises(LlavaRecordError, match="cap-0.*max_length 10"):
        LlavaDataset(caption_records, image_root, processor, "plain", max_length=10)[0]


def test_bad_image_or_record_names_the_id(caption_records, image_root, processor, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png at all")
    gone = dict(caption_records[0], id="gone", image="imgs/missing.png")
    with pytest.raises(LlavaRecordError, match="1 records.*'gone'"):
        LlavaDataset([gone], tmp_path, processor, "plain", max_length=64)
    broken = dict(caption_records[0], id="broken", image="imgs/broken.png")
    dataset = LlavaDataset([broken], tmp_path, processor, "plain", max_length=64)
    with pytest.raises(LlavaRecordError, match="'broken'.*broken.png"):
        dataset[0]
    no_reply = dict(caption_records[0], id="half", conversations=caption_records[0]["conversations"][:1])
    with pytest.raises(LlavaRecordError, match="'half'"):
        LlavaDataset([no_reply], image_root, processor, "plain", max_length=64)
    with pytest.raises(LlavaRecordError, match="duplicate.*cap-0"):
        LlavaDataset(caption_records[:2] * 2, image_root, processor, "plain", max_length=64)


def test_collator_pads_right_with_ignored_labels(caption_records, chat_records, image_root, processor):
    short = LlavaDataset(caption_records, image_root, processor, "plain", max_length=2048)[0]
    long = LlavaDataset(chat_records, image_root, processor, "chat", max_length=2048)[0]
    pad = processor.tokenizer.pad_token_id
    batch = LlavaCollator(pad)([short, long])
    n_short, n_long = len(short["input_ids"]), len(long["input_ids"])
    assert batch["input_ids"].shape == (2, n_long) and n_short < n_long
    assert torch.equal(batch["input_ids"][0, :n_short], short["input_ids"])
    assert (batch["input_ids"][0, n_short:] == pad).all()
    assert (batch["labels"][0, n_short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"].sum(1).tolist() == [n_short, n_long]
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["ids"] == ["cap-0", "chat-0"]


def test_pad_to_square_keeps_content_and_fills_with_the_mean():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = pad_to_square(image, [0.5, 0.25, 0.0])
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (128, 64, 0)
    assert square.getpixel((20, 20)) == (255, 0, 0)
