"""Sentence embeddings of a model copy against the original, with sentence-transformers on CPU.

Usage: python sentence_similarity.py ORIGINAL_DIR COPY_DIR
Prints one JSON object: the per-sentence cosine similarities of COPY's embeddings to
ORIGINAL's (min, mean, all), and for reference the same for ORIGINAL cast to bfloat16.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

SENTENCES = [
    "The weights of this model are export-controlled.",
    "A licence is required before the checkpoint can be shipped abroad.",
    "The cat sat on the mat and looked out of the window.",
    "Quarterly revenue grew by twelve percent year over year.",
    "Please restart the server after applying the security patch.",
    "The mitochondria is the powerhouse of the cell.",
    "She played the violin at the wedding on Saturday.",
    "Encrypt data at rest and keep the keys in a hardware module.",
    "How do I reset my password if I lost access to my email?",
    "The train to Edinburgh leaves from platform four.",
    "Photosynthesis converts light energy into chemical energy.",
    "A stitch in time saves nine.",
    "The committee postponed its decision until next month.",
    "Our tests run on two cores in under twenty minutes.",
    "Rain is expected across the north of the country tomorrow.",
    "He ordered a coffee with oat milk and no sugar.",
    "The defendant pleaded not guilty to all charges.",
    "Gradient descent minimises the loss one step at a time.",
    "The museum's new wing houses modern sculpture.",
    "Never share your private key with anyone.",
    "The football match ended in a goalless draw.",
    "Volcanic ash grounded flights across Europe for a week.",
    "Add two cups of flour and stir until smooth.",
    "The treaty was signed by forty-two nations.",
    "Every access to the vault is written to an append-only ledger.",
    "The spacecraft entered orbit around Jupiter.",
    "Children learn languages faster than adults do.",
    "The bridge was closed for repairs over the weekend.",
    "Interest rates were left unchanged by the central bank.",
    "This sentence is about nothing in particular.",
    "A leaked copy can be traced back to the recipient it was released to.",
    "The orchestra tuned up before the overture began.",
    "Wear a helmet when you ride a bicycle in traffic.",
    "The library extended its opening hours during exams.",
    "Tokyo is the capital of Japan.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The startup raised its first round of funding in March.",
    "I can't find my keys anywhere.",
    "The novel follows three generations of one family.",
    "Attestation proves which host is asking for the key.",
    "The glacier has retreated two kilometres since 1950.",
    "Dolphins communicate with clicks and whistles.",
    "The contract expires at the end of the fiscal year.",
    "Turn left at the roundabout and continue for a mile.",
    "The vaccine was approved after a large clinical trial.",
    "Sales of electric cars doubled last year.",
    "The poem compares love to a summer's day.",
    "A denied request must not leave a single byte behind.",
    "The hikers reached the summit just before sunset.",
    "Compile the project in release mode for the benchmarks.",
    "The city council voted to expand the bus network.",
    "An apple a day keeps the doctor away.",
    "The earthquake measured 6.1 on the Richter scale.",
    "Mix the paint thoroughly before applying the first coat.",
    "The professor's lecture on entropy ran long.",
    "Birds migrate south when the days grow shorter.",
    "The stock market fell sharply on Monday morning.",
    "Keep the receipt in case you need to return the item.",
    "Neural networks can memorise their training data.",
    "The lighthouse keeper lit the lamp at dusk.",
]


def encode(model):
    return model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True).double()


def main():
    original, copy = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    a = SentenceTransformer(original, device="cpu")
    ea = encode(a)
    eb = encode(SentenceTransformer(copy, device="cpu"))
    cos = (ea * eb).sum(dim=1).tolist()
    # Reference: the original cast to bfloat16 (weights rounded, computed in float32).
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))
    bf = (ea * encode(a)).sum(dim=1).tolist()
    print(json.dumps({
        "sentences": len(SENTENCES),
        "min": min(cos),
        "mean": sum(cos) / len(cos),
        "bf16_cast_min": min(bf),
        "bf16_cast_mean": sum(bf) / len(bf),
        "cosines": cos,
    }))


if __name__ == "__main__":
    main()
