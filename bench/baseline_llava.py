"""The original LLaVA data pipeline (haotian-liu/LLaVA `llava/train/train.py`, `llava/mm_utils.py`,
`llava/conversation.py`), re-written from /work/shared/reference/llava-original-behaviour.md §2–3 as the
baseline of `bench_data.py`. It keeps the original algorithm, including its costs (each round and each
instruction re-tokenized for the mask, `tokenizer_image_token` chunking, a dummy zero image per text-only
sample) and its quirks (the `-2` / legacy off-by-one hack, whole-sample masking on a length mismatch).

Not the original's slow (Python SentencePiece) tokenizer: transformers 5 has only the Rust-backed
`LlamaTokenizer`, so the baseline calls the same fast tokenizer as ours, the original number of times.
That makes the baseline *faster* than the real original, so our speed-up is, if anything, understated.
"""
from __future__ import annotations
import copy, json
from pathlib import Path
import torch
from PIL import Image

IGNORE_INDEX, IMAGE_TOKEN_INDEX, DEFAULT_IMAGE_TOKEN = -100, -200, '<image>'
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")

class Conversation:
    "`conv_vicuna_v1`: SeparatorStyle.TWO, sep=' ', sep2='</s>', roles USER/ASSISTANT."
    def __init__(self): self.system, self.roles, self.sep, self.sep2, self.messages = SYSTEM, ('USER', 'ASSISTANT'), ' ', '</s>', []
    def append_message(self, role, message): self.messages.append([role, message])
    def get_prompt(self):
        seps = [self.sep, self.sep2]
        ret = self.system + seps[0]
        for i, (role, message) in enumerate(self.messages):
            ret += role + ': ' + message + seps[i % 2] if message else role + ':'
        return ret

def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    "Split on '<image>', tokenize each chunk (each with BOS), keep one BOS, join with -200."
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split('<image>')]
    def insert_separator(X, sep): return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]
    input_ids, offset = [], 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1; input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)): input_ids.extend(x[offset:])
    if return_tensors == 'pt': return torch.tensor(input_ids, dtype=torch.long)
    return input_ids

def expand2square(pil_img, background_color):
    width, height = pil_img.size
    if width == height: return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color); result.paste(pil_img, (0, (width - height) // 2)); return result
    result = Image.new(pil_img.mode, (height, height), background_color); result.paste(pil_img, ((height - width) // 2, 0)); return result

def preprocess_multimodal(sources):
    "Move '<image>' to the front of its turn (mm_use_im_start_end False, no mmtag)."
    for source in sources:
        for sentence in source:
            if DEFAULT_IMAGE_TOKEN in sentence['value']:
                sentence['value'] = sentence['value'].replace(DEFAULT_IMAGE_TOKEN, '').strip()
                sentence['value'] = (DEFAULT_IMAGE_TOKEN + '\n' + sentence['value']).strip()
    return sources

def preprocess_v1(sources, tokenizer, has_image=False):
    "The original `preprocess_v1`: render, tokenize, then mask by re-tokenizing each round and instruction."
    conv = Conversation()
    roles = {'human': conv.roles[0], 'gpt': conv.roles[1]}
    conversations = []
    for i, source in enumerate(sources):
        if roles[source[0]['from']] != conv.roles[0]: source = source[1:]
        conv.messages = []
        for j, sentence in enumerate(source):
            role = roles[sentence['from']]
            assert role == conv.roles[j % 2], f'{i}'
            conv.append_message(role, sentence['value'])
        conversations.append(conv.get_prompt())
    if has_image: input_ids = torch.stack([tokenizer_image_token(p, tokenizer, return_tensors='pt') for p in conversations], dim=0)
    else: input_ids = tokenizer(conversations, return_tensors='pt', padding='longest', max_length=tokenizer.model_max_length, truncation=True).input_ids
    targets = input_ids.clone()
    sep = conv.sep + conv.roles[1] + ': '
    legacy = getattr(tokenizer, 'legacy', False)
    for conversation, target in zip(conversations, targets):
        total_len = int(target.ne(tokenizer.pad_token_id).sum())
        rounds = conversation.split(conv.sep2)
        cur_len = 1
        target[:cur_len] = IGNORE_INDEX
        for i, rou in enumerate(rounds):
            if rou == '': break
            parts = rou.split(sep)
            if len(parts) != 2: break
            parts[0] += sep
            if has_image:
                round_len = len(tokenizer_image_token(rou, tokenizer))
                instruction_len = len(tokenizer_image_token(parts[0], tokenizer)) - 2
            else:
                round_len = len(tokenizer(rou).input_ids)
                instruction_len = len(tokenizer(parts[0]).input_ids) - 2
            if i != 0 and not legacy:   # IS_TOKENIZER_GREATER_THAN_0_14
                round_len -= 1; instruction_len -= 1
            target[cur_len: cur_len + instruction_len] = IGNORE_INDEX
            cur_len += round_len
        target[cur_len:] = IGNORE_INDEX
        if cur_len < tokenizer.model_max_length and cur_len != total_len:
            target[:] = IGNORE_INDEX   # original: print("WARNING: tokenization mismatch ... (ignored)")
    return dict(input_ids=input_ids, labels=targets)

class BaselineLazySupervisedDataset(torch.utils.data.Dataset):
    "The original `LazySupervisedDataset.__getitem__` (image_aspect_ratio='pad', is_multimodal=True)."
    def __init__(self, data_path, image_folder, tokenizer, image_processor):
        self.list_data_dict = json.load(open(data_path, 'r'))
        self.image_folder, self.tokenizer, self.processor = image_folder, tokenizer, image_processor
    def __len__(self): return len(self.list_data_dict)
    def __getitem__(self, i):
        sources = self.list_data_dict[i]
        if isinstance(i, int): sources = [sources]
        if 'image' in sources[0]:
            processor = self.processor
            image = Image.open(str(Path(self.image_folder)/sources[0]['image'])).convert('RGB')
            image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
            image = processor.preprocess(image, return_tensors='pt')['pixel_values'][0]
            sources = preprocess_multimodal(copy.deepcopy([e['conversations'] for e in sources]))
        else: sources = copy.deepcopy([e['conversations'] for e in sources])
        data_dict = preprocess_v1(sources, self.tokenizer, has_image=('image' in self.list_data_dict[i]))
        data_dict = dict(input_ids=data_dict['input_ids'][0], labels=data_dict['labels'][0])
        if 'image' in self.list_data_dict[i]: data_dict['image'] = image
        else:
            crop_size = self.processor.crop_size
            data_dict['image'] = torch.zeros(3, crop_size['height'], crop_size['width'])
        return data_dict

class BaselineCollator:
    "The original `DataCollatorForSupervisedDataset`."
    def __init__(self, tokenizer): self.tokenizer = tokenizer
    def __call__(self, instances):
        input_ids, labels = tuple([inst[k] for inst in instances] for k in ('input_ids', 'labels'))
        input_ids = torch.nn.utils.rnn.pad_sequence(input_ids, batch_first=True, padding_value=self.tokenizer.pad_token_id)
        labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX)
        input_ids = input_ids[:, :self.tokenizer.model_max_length]; labels = labels[:, :self.tokenizer.model_max_length]
        batch = dict(input_ids=input_ids, labels=labels, attention_mask=input_ids.ne(self.tokenizer.pad_token_id))
        if 'image' in instances[0]:
            images = [instance['image'] for instance in instances]
            batch['images'] = torch.stack(images) if all(x is not None and x.shape == images[0].shape for x in images) else images
        return batch
