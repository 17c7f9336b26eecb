"""LESS's validation prompt formats (BBH, MMLU, TyDiQA) as conversations, shared by the built-in tasks, the
LESS-folder loader (`less_eval.py`) and the evaluation prompts (`evaluate/items.py`).

LESS format, and the one place lessdb differs. LESS (`less/data_selection/get_validation_dataset.py`) builds
each validation example as a Tulu string `"<|user|>\\n" + U + "\\n<|assistant|>\\n" + CUE` followed by the
completion `" " + ANSWER`, where CUE is "A:" (BBH), "The answer is:" (MMLU) or the language's "Answer:" (TyDiQA),
and only the completion carries a loss. A conversation cannot put unlabelled text inside the assistant turn,
so lessdb ends the user turn with the cue on its own line (`U + "\\n" + CUE`) and makes the assistant turn
exactly the completion (stripped). Every character of LESS's text is kept, in LESS's order, and the loss falls
on exactly LESS's completion; only the position of the assistant marker moves (before the cue, not after).
"""
from __future__ import annotations


def _less_conversation(user_text: str, cue: str, completion: str) -> list[dict]:
    """LESS's query `<|user|>\\n{user_text}\\n<|assistant|>\\n{cue}` + completion, as a conversation whose
    assistant turn is exactly the completion (see the module docstring)."""
    return [{"role": "user", "content": user_text.rstrip("\n") + "\n" + cue},
            {"role": "assistant", "content": completion.strip()}]


def less_bbh_examples(task_prompt: str, exemplars: list[str]) -> list[list[dict]]:
    """LESS's BBH validation examples of one subtask: exemplar i is the question, the other exemplars (in order)
    are the in-context demonstrations, the completion is its reasoning ("Let's think step by step. ... So the
    answer is X."). Each exemplar is `"Q: ...\\nA: ..."` with exactly one `"\\nA:"`."""
    split = []
    for ex in exemplars:
        if ex.count("\nA:") != 1:
            raise ValueError(f"a BBH exemplar must contain exactly one '\\nA:', got {ex.count(chr(10) + 'A:')}: "
                             f"{ex[:80]!r}")
        question, answer = ex.split("\nA:")
        split.append((question, answer))
    out = []
    for i, (question, answer) in enumerate(split):
        icl = "".join(ex + "\n\n" for j, ex in enumerate(exemplars) if j != i)
        out.append(_less_conversation(task_prompt.strip() + "\n\n" + icl + question, "A:", answer))
    return out


def split_less_bbh_prompt(three_shot: str) -> tuple[str, list[str]]:
    """Split a LESS `bbh-three-shot.json` value as LESS does: the last three "\\n\\n"-separated blocks are the
    exemplars, everything before them the task description."""
    parts = three_shot.split("\n\n")
    return "\n\n".join(parts[:-3]), parts[-3:]


def less_mmlu_example(subject: str, question: str, choices: list[str], answer: str) -> list[dict]:
    """LESS's zero-shot MMLU validation example (hendrycks' format_subject, whose leading space gives the
    double space in "about  abstract algebra", is kept as LESS and the original MMLU code have it)."""
    subject_text = "".join(" " + word for word in subject.split("_"))
    prompt = f"The following are multiple choice questions (with answers) about {subject_text}.\n\n{question}"
    for letter, choice in zip("ABCD", choices):
        prompt += f"\n{letter}. {choice}"
    prompt += "\nAnswer:"
    return _less_conversation(prompt, "The answer is:", answer)


# open-instruct's TyDiQA templates as LESS copies them: (instruction, passage, question, answer labels).
TYDIQA_TEMPLATES = {
    "english": ("Answer the following question based on the information in the given passage.", "Passage:",
                "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:", "প্রশ্ন:", "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.", "Kappale:", "Kysymys:",
                "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.", "Bagian:",
                   "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.", "Отрывок:", "Вопрос:",
                "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.", "Kifungu:", "Swali:",
                "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}


def less_tydiqa_example(language: str, context: str, question: str, answer: str) -> list[dict]:
    """LESS's one-shot TyDiQA validation example: gold passage + question -> answer span. (LESS joins the
    instruction and "Passage:" with no separator; kept.)"""
    instruction, p_label, q_label, a_label = TYDIQA_TEMPLATES[language]
    user = instruction + p_label + " " + context + "\n" + q_label + " " + question + "\n"
    return _less_conversation(user, a_label, answer)
