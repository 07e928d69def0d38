// The page's words in English and Chinese. Elements name their string with data-i18n (text),
// data-i18n-label (aria-label) or data-i18n-alt (alt); the script's own messages go through t().
export const STRINGS = {
  en: {
    skip: "Skip to the image", subtitle: "background removal", connecting: "connecting…", model: "Model",
    apiKey: "API key", parameters: "Parameters", preset: "Preset", none: "none",
    presetHint: "Only the parameters you change are sent; they override the preset.",
    refinement: "Refinement", refineNone: "none (fastest)", refineGuided: "guided filter (fast, edge-aware)",
    refineTrimap: "closed-form matting (best edges)", decontaminate: "Remove background colour from edges",
    alphaThreshold: "Alpha threshold", erode: "Erode (px)", feather: "Feather (px)", crop: "Crop to the subject",
    cropMargin: "Crop margin (px)", background: "Background", bgTransparent: "Transparent", bgColor: "Colour",
    bgImage: "Image", pickColor: "Pick a colour", bgChoose: "Choose a background image…", format: "Format",
    fmtPng: "PNG (transparent)", fmtMask: "Mask (alpha only)", reset: "Reset parameters",
    tabSingle: "Single image", tabBatch: "Batch", dropOne: "Drop an image here",
    dropOneMore: "or click to choose one, or paste it (Ctrl+V)", urlLabel: "or an image URL",
    urlGo: "Remove background", before: "Before", after: "After", beforeAfter: "Before/after",
    apply: "Apply parameters", download: "Download", history: "This session",
    dropMany: "Drop images or a folder here", dropManyMore: "or click to choose them",
    chooseFolder: "Choose a folder…", clear: "Clear", processAll: "Process all", downloadZip: "Download ZIP",
    colFile: "File", colSize: "Size", colProgress: "Progress", colStatus: "Status", log: "Log",
    footerApi: "Our API:", footerRemovebg: "remove.bg-compatible:", switchTo: "中文",
    // the script's messages
    notReady: "server not ready: {msg}", processing: "processing…", noFiles: "no files",
    summary: "{n} files · {done} done · {failed} failed", queued: "queued", uploading: "uploading {p}%",
    downloading: "downloading", done: "done · {s} s", retry: "Retry", waiting: "rate limited: retrying in {s} s",
    subjectAt: "subject at {bbox}", subjectNone: "subject not found", info: "{w}×{h} px · {subject} · round trip {ms} ms",
    started: "processing {n} file(s), {c} at a time", finished: "finished: {ok} ok, {failed} failed",
    zipped: "ZIP downloaded: {n} image(s) and the log", network: "network error: is the server running?",
  },
  zh: {
    skip: "跳到图片", subtitle: "背景移除", connecting: "正在连接…", model: "模型",
    apiKey: "API 密钥", parameters: "参数", preset: "预设", none: "无",
    presetHint: "只发送你改动过的参数；它们会覆盖预设。",
    refinement: "边缘细化", refineNone: "无（最快）", refineGuided: "导向滤波（快，保边）",
    refineTrimap: "闭式抠图（边缘最好）", decontaminate: "去除边缘的背景色",
    alphaThreshold: "透明度阈值", erode: "收缩（像素）", feather: "羽化（像素）", crop: "裁剪到主体",
    cropMargin: "裁剪边距（像素）", background: "背景", bgTransparent: "透明", bgColor: "颜色",
    bgImage: "图片", pickColor: "选择颜色", bgChoose: "选择背景图片…", format: "格式",
    fmtPng: "PNG（透明）", fmtMask: "蒙版（仅透明度）", reset: "重置参数",
    tabSingle: "单张图片", tabBatch: "批量", dropOne: "把图片拖到这里",
    dropOneMore: "或点击选择，也可以直接粘贴（Ctrl+V）", urlLabel: "或输入图片网址",
    urlGo: "移除背景", before: "原图", after: "结果", beforeAfter: "原图/结果对比",
    apply: "应用参数", download: "下载", history: "本次会话",
    dropMany: "把多张图片或一个文件夹拖到这里", dropManyMore: "或点击选择",
    chooseFolder: "选择文件夹…", clear: "清空", processAll: "全部处理", downloadZip: "下载 ZIP",
    colFile: "文件", colSize: "大小", colProgress: "进度", colStatus: "状态", log: "日志",
    footerApi: "我们的 API：", footerRemovebg: "兼容 remove.bg：", switchTo: "English",
    notReady: "服务器未就绪：{msg}", processing: "处理中…", noFiles: "没有文件",
    summary: "{n} 个文件 · {done} 个完成 · {failed} 个失败", queued: "排队中", uploading: "上传中 {p}%",
    downloading: "下载中", done: "完成 · {s} 秒", retry: "重试", waiting: "请求过多：{s} 秒后重试",
    subjectAt: "主体位于 {bbox}", subjectNone: "未找到主体", info: "{w}×{h} 像素 · {subject} · 往返 {ms} 毫秒",
    started: "开始处理 {n} 个文件，每次 {c} 个", finished: "完成：成功 {ok} 个，失败 {failed} 个",
    zipped: "已下载 ZIP：{n} 张图片和日志", network: "网络错误：服务器在运行吗？",
  },
};

const STORE = "matting-lang";
let current = "en";

// The stored choice wins; else the browser's first language: Chinese for any zh-*, else English.
export function pickLanguage(stored, languages) {
  if (stored === "en" || stored === "zh") return stored;
  return (languages[0] || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k]));
}

export function language() { return current; }

export function applyLanguage(lang, save = false) {
  current = lang;
  if (save) localStorage.setItem(STORE, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
  const other = lang === "zh" ? "en" : "zh";
  const button = document.getElementById("lang");
  button.textContent = STRINGS[lang].switchTo;
  button.lang = other === "zh" ? "zh-CN" : "en";
  button.setAttribute("aria-label", STRINGS[lang].switchTo);
}

export function initialLanguage() {
  return pickLanguage(localStorage.getItem(STORE), navigator.languages || [navigator.language]);
}
