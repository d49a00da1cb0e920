"""Tiny ESPnet modules and a batch shared by the CR-CTC model tests (no dropout: SpecAugment is the only random draw of
a training forward), and the two views' encoder output computed by hand."""

import torch
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.specaug.specaug import SpecAug

from hybrid_encoders.crctc.views import two_views
from hybrid_encoders.transducer.stateless_decoder import StatelessTransducerDecoder

TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "<sos/eos>"]
VOCAB = len(TOKENS)
NO_DROPOUT = {"dropout_rate": 0.0, "positional_dropout_rate": 0.0}


def modules(decoder=None, specaug=True):
    """Tiny modules without dropout, so that SpecAugment is the only random draw of a training forward."""
    torch.manual_seed(0)
    encoder = ConformerEncoder(
        input_size=20, output_size=16, attention_heads=2, linear_units=32, num_blocks=1, input_layer="conv2d",
        attention_dropout_rate=0.0, **NO_DROPOUT,
    )
    if decoder == "transformer":
        decoder = TransformerDecoder(
            VOCAB, 16, attention_heads=2, linear_units=32, num_blocks=1, self_attention_dropout_rate=0.0,
            src_attention_dropout_rate=0.0, **NO_DROPOUT,
        )
    elif decoder == "stateless":
        decoder = StatelessTransducerDecoder(VOCAB, 16, decoder_dim=8)
    specaug = SpecAug(
        time_warp_window=3, freq_mask_width_range=(0, 5), time_mask_width_ratio_range=(0.0, 0.1), num_time_mask=2
    ) if specaug else None
    return dict(
        vocab_size=VOCAB, token_list=TOKENS, frontend=None, specaug=specaug, normalize=None, preencoder=None,
        encoder=encoder, postencoder=None, decoder=decoder, ctc=CTC(VOCAB, 16), joint_network=None,
    )


def batch():
    generator = torch.Generator().manual_seed(5)
    speech = torch.randn(3, 60, 20, generator=generator)
    text = torch.tensor([[2, 3, 4, 5], [3, 3, -1, -1], [5, -1, -1, -1]])
    return speech, torch.tensor([60, 48, 33]), text, torch.tensor([4, 2, 1])


def encode_views_by_hand(model, seed):
    """The encoder output of both views, drawn as a training forward with ``seed`` draws them."""
    speech, speech_lengths, _, _ = batch()
    torch.manual_seed(seed)
    views, view_lengths = two_views(model.specaug, speech.clone(), speech_lengths)
    encoder_out, encoder_out_lens, _ = model.encoder(views, view_lengths)
    return encoder_out, encoder_out_lens
