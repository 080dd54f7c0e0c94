// Vietnamese input methods (Telex and VNI) as a pure function over the word being typed:
// no DOM, no state. The on-screen keyboard and physical keystrokes both feed it the word
// before the caret and the key pressed, and put back what it returns.
//
//   VietIME.type("Nguyeen", "x", "telex") -> "Nguyễn"
//   VietIME.type("Vie65", "t", "vni")     -> "Việt"      (a plain letter: tone re-placed)
//   VietIME.apply("Nguyeenx Vaawn", "telex") -> "Nguyễn Văn"
//
// Stateless on purpose: the text in the field is the only truth (the officer may move the
// caret, delete, paste), so every rule is decided from the word itself. Tones are placed
// by the traditional rule ("hòa", "thủy"), as most Vietnamese IMEs and the civil registry's
// name lists write them; {style: "new"} gives "hoà", "thuỷ".
"use strict";

(function (root) {
  // Each vowel with its six tones, in VNI order: none, sắc, huyền, hỏi, ngã, nặng.
  var TONED = {
    a: "aáàảãạ", "ă": "ăắằẳẵặ", "â": "âấầẩẫậ", e: "eéèẻẽẹ", "ê": "êếềểễệ",
    i: "iíìỉĩị", o: "oóòỏõọ", "ô": "ôốồổỗộ", "ơ": "ơớờởỡợ", u: "uúùủũụ",
    "ư": "ưứừửữự", y: "yýỳỷỹỵ"
  };
  var VOWEL = {}; // any toned lower-case vowel -> [vowel without tone, tone]
  Object.keys(TONED).forEach(function (base) {
    for (var t = 0; t < 6; t++) VOWEL[TONED[base][t]] = [base, t];
  });
  var PLAIN = { "ă": "a", "â": "a", "ê": "e", "ô": "o", "ơ": "o", "ư": "u", "đ": "d" };
  var HAT = { a: "â", "ă": "â", e: "ê", o: "ô", "ơ": "ô" };
  var MARKED = "ăâêôơư";
  // A syllable may end only in these; k, h and l end syllables of the Central Highlands'
  // languages, in official names (Đắk Lắk, Kuêh, Khăl). Not the Telex keys (s f r x j w z):
  // "ass" stays "ass" after the undo of "as".
  var CODAS = { "": 1, c: 1, ch: 1, k: 1, h: 1, l: 1, m: 1, n: 1, ng: 1, nh: 1, p: 1, t: 1 };

  // What a key does in each method: a tone (1..5), 0 = remove the tone, or a mark.
  var TELEX = { s: 1, f: 2, r: 3, x: 4, j: 5, z: 0, a: "hat-a", e: "hat-e", o: "hat-o", w: "horn-breve", d: "bar" };
  var VNI = { "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "0": 0, "6": "hat", "7": "horn", "8": "breve", "9": "bar" };
  var METHODS = { telex: TELEX, vni: VNI };

  function isUpper(ch) {
    return ch !== ch.toLowerCase();
  }

  function plain(ch) {
    return PLAIN[ch] || ch;
  }

  // The word as onset + nucleus + coda letters ({ch: lower case without tone, up: bool})
  // and its tone; null when it is not one syllable (two vowel groups, two tones, an
  // impossible ending): such a word gets every key as a plain letter.
  function parse(word) {
    var letters = [];
    var tone = 0;
    for (var i = 0; i < word.length; i++) {
      var ch = word[i];
      var low = ch.toLowerCase();
      var v = VOWEL[low];
      if (v) {
        if (v[1] && tone) return null;
        if (v[1]) tone = v[1];
        letters.push({ ch: v[0], up: isUpper(ch), vowel: true });
      } else {
        letters.push({ ch: low, up: isUpper(ch), vowel: false });
      }
    }
    var n = 0;
    var onset = [];
    var nucleus = [];
    var coda = [];
    while (n < letters.length && !letters[n].vowel) onset.push(letters[n++]);
    while (n < letters.length && letters[n].vowel) nucleus.push(letters[n++]);
    while (n < letters.length && !letters[n].vowel) coda.push(letters[n++]);
    if (n < letters.length) return null;
    // "qu" and "gi" (before another vowel) are consonants: quý, già, giữ (but gìn).
    var head = text(onset);
    if (nucleus.length && ((head === "q" && nucleus[0].ch === "u") ||
        (head === "g" && nucleus[0].ch === "i" && nucleus.length > 1))) {
      onset.push(nucleus.shift());
    }
    if (!(text(coda) in CODAS)) return null;
    if (tone && !nucleus.length) return null;
    return { onset: onset, nucleus: nucleus, coda: coda, tone: tone };
  }

  function text(letters) {
    var out = "";
    for (var i = 0; i < letters.length; i++) out += letters[i].ch;
    return out;
  }

  function stripped(letters) {
    var out = "";
    for (var i = 0; i < letters.length; i++) out += plain(letters[i].ch);
    return out;
  }

  // Which vowel of the nucleus carries the tone.
  function tonePosition(s, style) {
    var nucleus = s.nucleus;
    var count = nucleus.length;
    for (var i = count - 1; i >= 0; i--) {
      if (MARKED.indexOf(nucleus[i].ch) >= 0) return i; // ươ: the ơ; ưu, âu: the first
    }
    if (count === 1) return 0;
    if (s.coda.length) return 1; // hoàng, thuyền's kin: the vowel before the ending
    if (count === 3) return 1; // ngoài, khuỷu
    if (style === "new" && /^(oa|oe|uy)$/.test(text(nucleus))) return 1; // hoà, thuỷ
    return 0; // hòa, thủy, mía, múa
  }

  function render(s, style) {
    var at = s.tone ? tonePosition(s, style) : -1;
    var out = "";
    var parts = [s.onset, s.nucleus, s.coda];
    for (var p = 0; p < 3; p++) {
      for (var i = 0; i < parts[p].length; i++) {
        var letter = parts[p][i];
        var ch = letter.ch;
        if (p === 1 && i === at) ch = TONED[ch][s.tone];
        out += letter.up ? ch.toUpperCase() : ch;
      }
    }
    return out;
  }

  function letter(key) {
    return { ch: key.toLowerCase(), up: isUpper(key), vowel: false };
  }

  // Spellings only known once a later letter comes. Huơ, thuở: after h, th, kh (or nothing) a final "uo" + horn is "uơ"; any letter
  // typed after it makes it "ươ" again (thương), as the dictionaries write these words.
  function fixUo(s) {
    var nucleus = s.nucleus;
    if (nucleus.length >= 2 && nucleus[0].ch === "u" && nucleus[1].ch === "ơ" &&
        (nucleus.length > 2 || s.coda.length)) {
      nucleus[0].ch = "ư";
    }
    // ưa never takes an ending: "Kuaw" + "ng" is Kuăng.
    if (nucleus.length === 2 && nucleus[0].ch === "ư" && nucleus[1].ch === "a" && s.coda.length) {
      nucleus[0].ch = "u";
      nucleus[1].ch = "ă";
    }
  }

  // A word of several syllables written together (Đakrông, Avương): the last one is the
  // one being typed. [before it, the last syllable] (before it is "" for one syllable).
  function lastSyllable(word) {
    var chars = Array.from(word);
    var i = chars.length;
    while (i > 0 && !VOWEL[chars[i - 1].toLowerCase()]) i--;
    if (i === 0) return ["", word];
    while (i > 0 && VOWEL[chars[i - 1].toLowerCase()]) i--;
    while (i > 0 && !VOWEL[chars[i - 1].toLowerCase()]) i--;
    if (i === 0) return ["", word];
    return [chars.slice(0, i).join(""), chars.slice(i).join("")];
  }

  // parse() of the syllable being typed: [what comes before it, its parse or null].
  function parseLast(word) {
    var s = parse(word);
    if (s) return ["", s];
    var parts = lastSyllable(word);
    return parts[0] ? [parts[0], parse(parts[1])] : ["", null];
  }

  // A key that is not (or no longer) a modifier: append it, and move the tone if the
  // new letter changed where it belongs (hòa + n -> hoàn).
  function append(word, key, style) {
    var joined = word + key;
    if (!/\p{L}/u.test(key)) return joined;
    var found = parseLast(joined);
    if (!found[1]) return joined;
    fixUo(found[1]);
    return found[0] + render(found[1], style);
  }

  // The undo of a modifier: the mark (or tone) is taken off and the key typed as a letter
  // ("ấ" + a -> "áa", "á" + s -> "as").
  function undo(s, key, style) {
    return render(s, style) + key;
  }

  function setMark(s, indices, marked) {
    for (var i = 0; i < indices.length; i++) {
      var l = s.nucleus[indices[i]];
      l.ch = marked[i];
    }
  }

  function hat(s, family, key, style, telex) {
    var nucleus = s.nucleus;
    var base = stripped(nucleus);
    // oa, oe + o is a new vowel (ngoao, ngoẹo), not ô.
    if (telex && family === "o" && !s.coda.length && (base === "oa" || base === "oe")) return null;
    for (var i = nucleus.length - 1; i >= 0; i--) {
      var p = plain(nucleus[i].ch);
      if (family ? p === family : (p === "a" || p === "e" || p === "o")) {
        if ("âêô".indexOf(nucleus[i].ch) >= 0) {
          nucleus[i].ch = p;
          return undo(s, key, style);
        }
        nucleus[i].ch = HAT[nucleus[i].ch];
        return render(s, style);
      }
    }
    return null;
  }

  function breve(s, key, style) {
    var nucleus = s.nucleus;
    for (var i = nucleus.length - 1; i >= 0; i--) {
      if (plain(nucleus[i].ch) === "a") {
        if (nucleus[i].ch === "ă") {
          nucleus[i].ch = "a";
          return undo(s, key, style);
        }
        nucleus[i].ch = "ă";
        return render(s, style);
      }
    }
    return null;
  }

  // Telex w and VNI 7: uo -> ươ, o -> ơ, u -> ư; Telex w also a -> ă (oa -> oă, but ua ->
  // ưa) and, alone after a consonant or at the start of a word, types ư.
  function horn(s, key, style, telex) {
    var nucleus = s.nucleus;
    var base = stripped(nucleus);
    var head = text(s.onset);
    var targets = null;
    var uo = base.indexOf("uo");
    if (uo >= 0) {
      targets = [uo, uo + 1];
      var marks = ["ư", "ơ"];
      var lone = uo + 2 === base.length && !s.coda.length && /^(|h|th|kh)$/.test(head);
      if (lone && nucleus[uo].ch === "u") {
        targets = [uo + 1];
        marks = ["ơ"];
      }
      var done = targets.every(function (t, i) { return nucleus[t].ch === marks[i]; });
      if (done) {
        setMark(s, [uo, uo + 1], ["u", "o"]);
        return undo(s, key, style);
      }
      setMark(s, targets, marks);
      return render(s, style);
    }
    var at = -1;
    var mark = "";
    if (telex && (base.indexOf("oa") >= 0 || (base === "ua" && s.coda.length))) {
      // oa -> oă (hoặc); ua before an ending -> uă (Kuăng; ưa never takes one)
      at = base.indexOf("a");
      mark = "ă";
    } else if (base.indexOf("o") >= 0) {
      at = base.lastIndexOf("o");
      mark = "ơ";
    } else if (base.indexOf("u") >= 0) {
      at = base.indexOf("u");
      mark = "ư";
    } else if (telex && base.indexOf("a") >= 0) {
      at = base.indexOf("a");
      mark = "ă";
    }
    if (at >= 0) {
      if (nucleus[at].ch === mark) {
        if (telex && mark === "ư" && nucleus.length === 1 && !s.coda.length) {
          // "w" then "w": the officer wanted a w (the ư most likely came from a lone w).
          s.nucleus = [];
          return render(s, style) + key;
        }
        nucleus[at].ch = plain(mark);
        return undo(s, key, style);
      }
      nucleus[at].ch = mark;
      return render(s, style);
    }
    if (telex && !s.coda.length && (!nucleus.length || (head === "g" && base === "i"))) {
      var u = letter(key);
      u.ch = "ư";
      u.vowel = true;
      if (nucleus.length) s.onset.push(nucleus.shift());
      s.nucleus.push(u);
      return render(s, style);
    }
    return null;
  }

  function bar(s, key, style) {
    var first = s.onset[0];
    if (!first || (first.ch !== "d" && first.ch !== "đ")) return null;
    if (first.ch === "đ") {
      first.ch = "d";
      return undo(s, key, style);
    }
    first.ch = "đ";
    return render(s, style);
  }

  function tone(s, value, key, style) {
    if (!s.nucleus.length) return null;
    if (value === 0) {
      if (!s.tone) return null;
      s.tone = 0;
      return render(s, style);
    }
    if (s.tone === value) {
      s.tone = 0;
      return undo(s, key, style);
    }
    s.tone = value;
    return render(s, style);
  }

  /**
   * The word after typing ``key`` at its end with ``mode`` ("telex", "vni", or "off").
   * ``word`` is the run of letters before the caret (may be ""); ``key`` one character.
   * options.style: "old" (default: hòa, thủy) or "new" (hoà, thuỷ).
   */
  function type(word, key, mode, options) {
    var style = (options && options.style) || "old";
    word = (word || "").normalize("NFC");
    var method = METHODS[mode];
    if (!method || key.length !== 1) return word + key;
    var action = method[key.toLowerCase()];
    var found = action === undefined ? ["", null] : parseLast(word);
    var s = found[1];
    var telex = mode === "telex";
    var out = null;
    if (s) {
      if (typeof action === "number") out = tone(s, action, key, style);
      else if (action === "hat-a") out = hat(s, "a", key, style, telex);
      else if (action === "hat-e") out = hat(s, "e", key, style, telex);
      else if (action === "hat-o") out = hat(s, "o", key, style, telex);
      else if (action === "hat") out = hat(s, "", key, style, telex);
      else if (action === "horn-breve" || action === "horn") out = horn(s, key, style, telex);
      else if (action === "breve") out = breve(s, key, style);
      else if (action === "bar") out = bar(s, key, style);
    }
    return out === null ? append(word, key, style) : found[0] + out;
  }

  /** Whether ``key`` takes part in a word for ``mode`` (letters, and VNI's digits). */
  function composes(key, mode) {
    if (/^\p{L}$/u.test(key)) return true;
    return mode === "vni" && /^[0-9]$/.test(key);
  }

  /** A whole key sequence typed in ``mode`` (anything else than a letter ends a word). */
  function apply(keys, mode, options) {
    var out = "";
    var word = "";
    var chars = Array.from(keys);
    for (var i = 0; i < chars.length; i++) {
      var key = chars[i];
      if (composes(key, mode)) {
        word = type(word, key, mode, options);
        // VNI: an undone modifier leaves a digit, which ends the word (as a separator would).
        var tail = /[^\p{L}]+$/u.exec(word);
        if (tail) {
          out += word;
          word = "";
        }
      } else {
        out += word + key;
        word = "";
      }
    }
    return out + word;
  }

  root.VietIME = { type: type, apply: apply, composes: composes, MODES: ["telex", "vni", "off"] };
})(typeof window !== "undefined" ? window : globalThis);
